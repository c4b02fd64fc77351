"""Structured configs (DESIGN.md "Config keys"), registered with Hydra's ConfigStore.

Hydra/OmegaConf reject unknown keys and wrong types; ``__post_init__`` checks the ranges with the rules of
``validation.py`` (the same the domain functions run on their arguments), so that ``OmegaConf.to_object(cfg)``
fails before any work with a message naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .activations import get_activation
from .io.output import job_folder
from .sim.networks import SIM_DTYPES
from .sim.schemes import SCHEMES
from .sim.simulate import FREEZES
from .tasks import IMAGE_SETS, NORMALIZATIONS
from .validation import (check_activity_units, check_chunk, check_depth, check_ensemble, check_image_pair_task,
                         check_proximity, check_run_length, check_scales, check_seed, check_synthetic_task, check_t0,
                         check_tol, choice, integer, positive, require)

__all__ = ["SyntheticTaskConfig", "ImagePairTaskConfig", "ModelConfig", "DynamicsConfig", "ProtocolConfig",
           "SimConfig", "RecordConfig", "TheoryConfig", "DecodeConfig", "ObserveConfig", "LimitsConfig",
           "DriftsimConfig",
           "register_configs", "equilibrium_time", "check_known_keys", "validate"]

EQUILIBRIUM_RELAXATIONS = 25.0  # 25 relaxation times 1/γ: e^(−25) ≈ 1e-11, the NNGP equilibrium for all purposes


def equilibrium_time(T: float, sigma: float) -> float:
    """25 σ²/T: the default length of the learning run and of the drift phase (SPEC §2, §5.3)."""
    return EQUILIBRIUM_RELAXATIONS / (T / sigma ** 2)


def _end_of_learning(T: float, sigma: float, t_max: Optional[float]) -> float:
    """Resolver ``${driftsim.t_end:T,sigma,t_max}``: dynamics.t_max, or 25 σ²/T when it is unset.

    conf/config.yaml freezes the readout there by default, so the default run has a drift phase
    whatever T and σ the user picks.
    """
    return float(t_max) if t_max is not None else equilibrium_time(float(T), float(sigma))


@dataclass
class SyntheticTaskConfig:
    """SPEC §7 synthetic task: P orthonormal inputs, labels +1,−1,..., one test point of chosen overlap."""
    name: str = "synthetic"
    n_train: int = 4
    overlap: float = 0.75
    input_dim: Optional[int] = None  # N0; unset: P + 1

    def __post_init__(self):
        check_synthetic_task(self.n_train, self.overlap, self.input_dim)


@dataclass
class ImagePairTaskConfig:
    """SPEC §7 image pairs: two classes of a labelled image set, labels +1 (first) and −1 (second)."""
    name: str = "mnist"
    classes: list[int] = field(default_factory=lambda: [0, 1])
    n_per_class: int = 50
    n_test: int = 100  # held-out test examples in all (half per class)
    root: Optional[str] = None
    normalize: str = "global"

    def __post_init__(self):
        choice("task.name", self.name, IMAGE_SETS)
        check_image_pair_task(self.classes, self.n_per_class, self.n_test)
        choice("task.normalize", self.normalize, NORMALIZATIONS)


@dataclass
class ModelConfig:
    depth: int = 1
    activation: str = "relu"
    width: int = 512

    def __post_init__(self):
        check_depth(self.depth)
        get_activation(self.activation)
        integer("model.width", self.width, 1)


@dataclass
class DynamicsConfig:
    T: float = 1e-3
    sigma: float = 1.0
    sigma0: float = 1.0
    t_max: Optional[float] = None  # unset: 25 σ²/T, deep into the NNGP equilibrium
    scheme: str = "langevin"  # langevin (exact prior part), euler (plain Euler–Maruyama), mpl
    dt: float = 0.01
    lam: float = 100.0
    mpl_inner_steps: int = 2  # MALA sweeps per MPL step on the proximal objective (langevin.mpl)

    def __post_init__(self):
        check_scales(self.T, self.sigma, self.sigma0)  # what any depth needs; DriftsimConfig checks the depth's
        for key in ("dt", "lam"):
            positive(f"dynamics.{key}", getattr(self, key))
        integer("dynamics.mpl_inner_steps", self.mpl_inner_steps, 0)
        check_run_length(self.t_max)
        choice("dynamics.scheme", self.scheme, SCHEMES)
        if self.scheme == "mpl":
            check_proximity(self.lam, self.gamma)

    @property
    def gamma(self) -> float:
        return self.T / self.sigma ** 2

    @property
    def t_end(self) -> float:
        return _end_of_learning(self.T, self.sigma, self.t_max)


@dataclass
class ProtocolConfig:
    t0: Optional[float] = None  # time of the freeze; unset: no drift phase
    t_drift: Optional[float] = None  # unset: 25 σ²/T
    freeze: str = "readout"  # readout (SPEC §6) or none (control: every weight drifts)

    def __post_init__(self):
        check_t0(self.t0)
        positive("protocol.t_drift", self.t_drift, optional=True)
        choice("protocol.freeze", self.freeze, FREEZES)


@dataclass
class SimConfig:
    ensemble: int = 64
    dtype: str = "float32"
    antithetic: bool = False  # pairs of networks that differ by the sign of the readout
    activity_units: int = 0  # hidden units of the last layer snapshotted per network (0: none)
    # networks simulated at once: a larger ensemble runs in consecutive chunks, each from its own seeds
    # (sim.simulate), so the memory of weights and activations stays bounded while the records hold all
    chunk: int = 1024

    def __post_init__(self):
        check_ensemble(self.ensemble, self.antithetic)
        check_chunk(self.chunk, self.antithetic)
        choice("sim.dtype", self.dtype, SIM_DTYPES)


@dataclass
class RecordConfig:
    n_times: int = 40  # recorded times per phase, log-spaced, plus t = 0
    hist_bins: int = 40

    def __post_init__(self):
        integer("record.n_times", self.n_times, 2)
        integer("record.hist_bins", self.hist_bins, 2)


@dataclass
class TheoryConfig:
    tol: float = 1e-4  # target accuracy of the Volterra solution
    # SPEC §10 covariance over the ensemble (theory/covariance.py). Off by default: its cost grows with the
    # points (rows ≈ points × drift basis) — fractions of a second on the synthetic task, about 0.6× the
    # mean solution for 3 test points of an MNIST pair (P = 100, σ0 = σ), 3–5× for 8 + 8 points
    covariance: bool = False
    # training and test points (each, evenly spread over the set) whose covariance is computed
    covariance_points: int = 8
    # memory budget of the expansion and the Volterra solve, GB; null: half the free memory of the device. A
    # problem that cannot fit is refused before the work, naming the largest P that fits (theory/memory.py)
    memory_gb: Optional[float] = None

    def __post_init__(self):
        check_tol(self.tol)
        integer("theory.covariance_points", self.covariance_points, 1)
        positive("theory.memory_gb", self.memory_gb, optional=True)


@dataclass
class DecodeConfig:
    cv_folds: int = 5  # stratified folds of every cross-validated accuracy (fewer when a class is smaller)
    population_networks: int = 8  # simulated networks whose hidden activity is decoded (cost grows with it)

    def __post_init__(self):
        integer("decode.cv_folds", self.cv_folds, 2)
        integer("decode.population_networks", self.population_networks, 1)


@dataclass
class ObserveConfig:
    """Recordings of the drifting population (DESIGN.md "Drift metrics and recordings"; driftsim.observe)."""
    sessions: int = 0  # S sessions evenly spaced from the freeze to t0 + t_drift; 0: off
    networks: int = 4  # A observed networks: simulated (mode sim) or theory samples (mode theory)
    cells: int = 200  # C cells recorded per network
    trials: int = 10  # R trials per stimulus
    noise: str = "poisson"  # none, gaussian (noise_sd), poisson (counts with rate gain·φ + baseline)
    gain: float = 10.0  # rate per unit of φ: mean counts of a trial
    baseline: float = 0.0
    noise_sd: float = 1.0
    turnover: float = 0.0  # fraction of the recorded cells replaced between consecutive sessions
    layer: Optional[int] = None  # hidden layer observed; unset: the last

    def __post_init__(self):
        from .observe import NOISES
        require(self.sessions == 0 or self.sessions >= 2, "observe.sessions", self.sessions,
                 "0 (off) or an integer >= 2 (drift metrics compare sessions)")
        require(self.networks >= 1, "observe.networks", self.networks, "an integer >= 1")
        require(self.cells >= 2, "observe.cells", self.cells, "an integer >= 2 (correlations over cells)")
        require(self.trials >= 1, "observe.trials", self.trials, "an integer >= 1")
        choice("observe.noise", self.noise, NOISES)
        positive("observe.gain", self.gain)
        positive("observe.noise_sd", self.noise_sd)
        require(math.isfinite(self.baseline), "observe.baseline", self.baseline, "a finite number")
        require(0 <= self.turnover <= 1, "observe.turnover", self.turnover, "a fraction in [0, 1]")
        require(self.layer is None or self.layer >= 1, "observe.layer", self.layer,
                 "unset (the last hidden layer) or an integer >= 1")

    def check_against(self, model: ModelConfig, sim: SimConfig, mode: str, drift: bool) -> None:
        """The observe keys that contradict the model, the ensemble or the run, named with what is allowed."""
        from .activations import get_activation
        from .observe import units_needed
        if self.sessions == 0:
            return
        require(drift, "observe.sessions", self.sessions, "0 unless protocol.t0 is set (sessions lie in the "
                 "drift phase)")
        require(self.layer is None or self.layer <= model.depth, "observe.layer", self.layer,
                 f"unset or a hidden layer 1..model.depth={model.depth}")
        require(not (self.noise == "poisson" and get_activation(model.activation).odd and self.baseline <= 0),
                 "observe.baseline", self.baseline, f"> 0 with observe.noise=poisson and model.activation="
                 f"{model.activation} (odd φ: gain·φ + baseline must be a rate >= 0)")
        if mode in ("sim", "both"):
            need = units_needed(self.sessions, self.cells, self.turnover)
            require(need <= model.width, "observe.cells", self.cells,
                     f"at most model.width={model.width} units per network in mode={mode} (with observe.turnover="
                     f"{self.turnover} the recording uses {need} distinct units)")
            require(self.networks <= sim.ensemble, "observe.networks", self.networks,
                     f"at most sim.ensemble={sim.ensemble} in mode={mode}")


@dataclass
class LimitsConfig:
    """What a run may cost before it is refused (driftsim.cost): the estimate is checked before any work."""
    max_steps: float = 1e9  # simulation steps of one network's learning run (dynamics.t_max / dynamics.dt)
    max_grid: float = 1e7  # time points of the theory's Volterra grid
    max_memory_gb: Optional[float] = None  # unset: half of this machine's RAM

    def __post_init__(self):
        positive("limits.max_steps", self.max_steps)
        positive("limits.max_grid", self.max_grid)
        positive("limits.max_memory_gb", self.max_memory_gb, optional=True)


@dataclass
class DriftsimConfig:
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"task": "mnist"}])
    task: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    mode: str = "theory"
    seed: int = 0
    device: str = "auto"
    out: Optional[str] = None
    overwrite: bool = False  # false: a complete file of the same config is kept (a rerun sweep skips it)

    def __post_init__(self):
        choice("mode", self.mode, ("theory", "sim", "both"))
        check_seed(self.seed)
        d = self.dynamics
        check_scales(d.T, d.sigma, d.sigma0, self.model.depth)
        choice("device", self.device, ("auto", "cpu", "cuda"))
        require(self.protocol.freeze == "readout" or self.mode == "sim", "protocol.freeze", self.protocol.freeze,
                "'readout' unless mode=sim (the theory covers the frozen readout only)")
        check_t0(self.protocol.t0, self.dynamics.t_end)
        require(self.protocol.t0 is not None or self.protocol.t_drift is None, "protocol.t_drift",
                self.protocol.t_drift, "unset when protocol.t0 is unset (there is no drift phase to last)")
        check_activity_units(self.sim.activity_units, self.model.width)
        self.observe.check_against(self.model, self.sim, self.mode, drift=self.protocol.t0 is not None)

    @property
    def t_drift(self) -> Optional[float]:
        """Length of the drift phase: protocol.t_drift, or 25 σ²/T; None without a freeze (protocol.t0 unset)."""
        if self.protocol.t0 is None:
            return None
        d = self.dynamics
        return self.protocol.t_drift if self.protocol.t_drift is not None else equilibrium_time(d.T, d.sigma)


def register_configs() -> None:
    """Register the schemas and the ``driftsim.t_end`` and ``driftsim.job_folder`` (a sweep job's folder,
    driftsim.io.output.job_folder) resolvers with Hydra; conf/*.yaml files extend them."""
    if not OmegaConf.has_resolver("driftsim.t_end"):
        OmegaConf.register_new_resolver("driftsim.t_end", _end_of_learning)
    if not OmegaConf.has_resolver("driftsim.job_folder"):
        OmegaConf.register_new_resolver("driftsim.job_folder", job_folder)
    cs = ConfigStore.instance()
    cs.store(name="driftsim_schema", node=DriftsimConfig)
    cs.store(group="task", name="synthetic_schema", node=SyntheticTaskConfig)
    cs.store(group="task", name="image_pair_schema", node=ImagePairTaskConfig)


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Refuse a key that its schema does not declare, such as one added with Hydra's ``+`` (``+foo=1``,
    ``+dynamics.temperature=0.5``), which Hydra and OmegaConf accept into a structured config silently.

    Raises
    ------
    ValueError
        ``"unknown config key 'model.widths': did you mean 'model.width'? The keys of model are [...]"``:
        the closest key of the same schema (difflib, when one is close) and all of its keys.
    """
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        known = [f.name for f in dataclasses.fields(schema) if f.name != "defaults"]
        for key in cfg:
            if key not in known and key != "defaults":
                close = difflib.get_close_matches(str(key), known, n=1)
                guess = f"did you mean {prefix + close[0]!r}?" if close else "no known key is close to it."
                where = f" of {prefix.rstrip('.')}" if prefix else ""
                raise ValueError(f"unknown config key {prefix + str(key)!r}: {guess} The keys{where} are {known}")
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            check_known_keys(node, f"{prefix}{key}.")


def validate(cfg: DictConfig) -> DriftsimConfig:
    """The composed config as a :class:`DriftsimConfig`, after refusing unknown keys and checking every range
    (``__post_init__``), before any work.

    Raises
    ------
    ValueError
        Naming the key, its value and what is allowed.
    """
    check_known_keys(cfg)
    return OmegaConf.to_object(cfg)
