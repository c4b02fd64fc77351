"""Structured configs (DESIGN.md "Config keys"), registered with Hydra's ConfigStore.

Hydra/OmegaConf reject unknown keys and wrong types; ``__post_init__`` checks the ranges, so that
``OmegaConf.to_object(cfg)`` fails before any work with a message naming the key and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

__all__ = ["SyntheticTaskConfig", "ImagePairTaskConfig", "ModelConfig", "DynamicsConfig", "ProtocolConfig",
           "SimConfig", "RecordConfig", "TheoryConfig", "DecodeConfig", "ObserveConfig", "DriftsimConfig",
           "register_configs", "equilibrium_time"]

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


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed: {allowed}")


def _positive(key: str, value: Optional[float], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(value is not None and math.isfinite(value) and value > 0, key, value, "a positive finite number")


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    _require(value in options, key, value, f"one of {list(options)}")


@dataclass
class SyntheticTaskConfig:
    """SPEC §7 synthetic task: P orthonormal inputs, labels +1,−1,..., one test point of chosen overlap."""
    name: str = "synthetic"
    n_train: int = 4
    overlap: float = 0.75
    input_dim: Optional[int] = None  # N0; unset: P + 1

    def __post_init__(self):
        _require(self.n_train >= 2 and self.n_train % 2 == 0, "task.n_train", self.n_train, "an even integer >= 2")
        _require(-1.0 <= self.overlap <= 1.0, "task.overlap", self.overlap, "a number in [-1, 1]")
        _require(self.input_dim is None or self.input_dim >= self.n_train + 1, "task.input_dim", self.input_dim,
                 "unset or an integer >= task.n_train + 1")


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
        _choice("task.name", self.name, ("mnist", "digits", "cifar10"))
        _require(len(self.classes) == 2 and self.classes[0] != self.classes[1], "task.classes", self.classes,
                 "two different class labels, e.g. [0,1]")
        _require(self.n_per_class >= 1, "task.n_per_class", self.n_per_class, "an integer >= 1")
        _require(self.n_test >= 0 and self.n_test % 2 == 0, "task.n_test", self.n_test,
                 "an even integer >= 0 (half per class)")
        _choice("task.normalize", self.normalize, ("global", "per_example", "none"))


@dataclass
class ModelConfig:
    depth: int = 1
    activation: str = "relu"
    width: int = 512

    def __post_init__(self):
        from .activations import ACTIVATIONS
        _require(self.depth >= 1, "model.depth", self.depth, "an integer >= 1")
        _choice("model.activation", self.activation, tuple(sorted(ACTIVATIONS)))
        _require(self.width >= 1, "model.width", self.width, "an integer >= 1")


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
        for key in ("T", "sigma", "sigma0", "dt", "lam"):
            _positive(f"dynamics.{key}", getattr(self, key))
        _require(self.mpl_inner_steps >= 0, "dynamics.mpl_inner_steps", self.mpl_inner_steps, "an integer >= 0")
        _positive("dynamics.t_max", self.t_max, allow_none=True)
        _choice("dynamics.scheme", self.scheme, ("langevin", "euler", "mpl"))

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
        _require(self.t0 is None or (math.isfinite(self.t0) and self.t0 >= 0), "protocol.t0", self.t0,
                 "unset (no drift phase) or a time >= 0 within the learning run")
        _positive("protocol.t_drift", self.t_drift, allow_none=True)
        _choice("protocol.freeze", self.freeze, ("readout", "none"))


@dataclass
class SimConfig:
    ensemble: int = 64
    dtype: str = "float32"
    antithetic: bool = False  # pairs of networks that differ by the sign of the readout
    activity_units: int = 0  # hidden units of the last layer snapshotted per network (0: none)

    def __post_init__(self):
        _require(self.ensemble >= 1, "sim.ensemble", self.ensemble, "an integer >= 1")
        _choice("sim.dtype", self.dtype, ("float32", "float64"))
        _require(not self.antithetic or self.ensemble % 2 == 0, "sim.ensemble", self.ensemble,
                 "an even number when sim.antithetic=true")
        _require(self.activity_units >= 0, "sim.activity_units", self.activity_units, "an integer >= 0")


@dataclass
class RecordConfig:
    n_times: int = 40  # recorded times per phase, log-spaced, plus t = 0
    hist_bins: int = 40

    def __post_init__(self):
        _require(self.n_times >= 2, "record.n_times", self.n_times, "an integer >= 2")
        _require(self.hist_bins >= 2, "record.hist_bins", self.hist_bins, "an integer >= 2")


@dataclass
class TheoryConfig:
    tol: float = 1e-4  # target accuracy of the Volterra solution
    # SPEC §10 covariance over the ensemble (theory/covariance.py). Off by default: its cost grows with the
    # points (rows ≈ points × drift basis) — fractions of a second on the synthetic task, about 0.6× the
    # mean solution for 3 test points of an MNIST pair (P = 100, σ0 = σ), 3–5× for 8 + 8 points
    covariance: bool = False
    # training and test points (each, evenly spread over the set) whose covariance is computed
    covariance_points: int = 8

    def __post_init__(self):
        _require(0 < self.tol < 1, "theory.tol", self.tol, "a number in (0, 1)")
        _require(self.covariance_points >= 1, "theory.covariance_points", self.covariance_points, "an integer >= 1")


@dataclass
class DecodeConfig:
    cv_folds: int = 5  # stratified folds of every cross-validated accuracy (fewer when a class is smaller)
    population_networks: int = 8  # simulated networks whose hidden activity is decoded (cost grows with it)

    def __post_init__(self):
        _require(self.cv_folds >= 2, "decode.cv_folds", self.cv_folds, "an integer >= 2")
        _require(self.population_networks >= 1, "decode.population_networks", self.population_networks,
                 "an integer >= 1")


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
        _require(self.sessions == 0 or self.sessions >= 2, "observe.sessions", self.sessions,
                 "0 (off) or an integer >= 2 (drift metrics compare sessions)")
        _require(self.networks >= 1, "observe.networks", self.networks, "an integer >= 1")
        _require(self.cells >= 2, "observe.cells", self.cells, "an integer >= 2 (correlations over cells)")
        _require(self.trials >= 1, "observe.trials", self.trials, "an integer >= 1")
        _choice("observe.noise", self.noise, NOISES)
        _positive("observe.gain", self.gain)
        _positive("observe.noise_sd", self.noise_sd)
        _require(math.isfinite(self.baseline), "observe.baseline", self.baseline, "a finite number")
        _require(0 <= self.turnover <= 1, "observe.turnover", self.turnover, "a fraction in [0, 1]")
        _require(self.layer is None or self.layer >= 1, "observe.layer", self.layer,
                 "unset (the last hidden layer) or an integer >= 1")

    def check_against(self, model: ModelConfig, sim: SimConfig, mode: str, drift: bool) -> None:
        """The observe keys that contradict the model, the ensemble or the run, named with what is allowed."""
        from .activations import get_activation
        from .observe import units_needed
        if self.sessions == 0:
            return
        _require(drift, "observe.sessions", self.sessions, "0 unless protocol.t0 is set (sessions lie in the "
                 "drift phase)")
        _require(self.layer is None or self.layer <= model.depth, "observe.layer", self.layer,
                 f"unset or a hidden layer 1..model.depth={model.depth}")
        _require(not (self.noise == "poisson" and get_activation(model.activation).odd and self.baseline <= 0),
                 "observe.baseline", self.baseline, f"> 0 with observe.noise=poisson and model.activation="
                 f"{model.activation} (odd φ: gain·φ + baseline must be a rate >= 0)")
        if mode in ("sim", "both"):
            need = units_needed(self.sessions, self.cells, self.turnover)
            _require(need <= model.width, "observe.cells", self.cells,
                     f"at most model.width={model.width} units per network in mode={mode} (with observe.turnover="
                     f"{self.turnover} the recording uses {need} distinct units)")
            _require(self.networks <= sim.ensemble, "observe.networks", self.networks,
                     f"at most sim.ensemble={sim.ensemble} in mode={mode}")


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
    mode: str = "theory"
    seed: int = 0
    device: str = "auto"
    out: Optional[str] = None
    overwrite: bool = False  # false: a complete file of the same config is kept (a rerun sweep skips it)

    def __post_init__(self):
        _choice("mode", self.mode, ("theory", "sim", "both"))
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _require(self.protocol.freeze == "readout" or self.mode == "sim", "protocol.freeze", self.protocol.freeze,
                 "'readout' unless mode=sim (the theory covers the frozen readout only)")
        t0 = self.protocol.t0
        _require(t0 is None or t0 <= self.dynamics.t_end, "protocol.t0", t0,
                 f"a time within the learning run [0, dynamics.t_max={self.dynamics.t_end:g}]")
        self.observe.check_against(self.model, self.sim, self.mode, drift=t0 is not None)

    @property
    def t_drift(self) -> Optional[float]:
        """Length of the drift phase: protocol.t_drift, or 25 σ²/T; None without a freeze (protocol.t0 unset)."""
        if self.protocol.t0 is None:
            return None
        d = self.dynamics
        return self.protocol.t_drift if self.protocol.t_drift is not None else equilibrium_time(d.T, d.sigma)


def register_configs() -> None:
    """Register the schemas and the ``driftsim.t_end`` resolver with Hydra; conf/*.yaml files extend them."""
    if not OmegaConf.has_resolver("driftsim.t_end"):
        OmegaConf.register_new_resolver("driftsim.t_end", _end_of_learning)
    cs = ConfigStore.instance()
    cs.store(name="driftsim_schema", node=DriftsimConfig)
    cs.store(group="task", name="synthetic_schema", node=SyntheticTaskConfig)
    cs.store(group="task", name="image_pair_schema", node=ImagePairTaskConfig)
