"""The ``driftsim`` command: one Hydra run, or a sweep (``-m``), from config to HDF5 file.

Pipeline of one run (DESIGN.md "Data flow"): validate the config (driftsim.config) → task (tasks.py,
SPEC §7) → recorded times (times.py; learning 0..dynamics.t_max, drift 0..t_drift after protocol.t0)
→ mean-predictor theory (mode theory/both, SPEC §5–6) with its covariance (§10, theory/covariance.py)
and/or Langevin ensembles (mode sim/both, §8)
→ decoding (analysis/decode.py) → with observe.sessions > 0, recordings of the drifting population
(observe.py: simulated networks' units and/or units sampled from the theory's Gaussian process), their
drift metrics (analysis/metrics.py) and the infinite-population predictions (theory/population.py)
→ the run file (io/store.py, schema driftsim/1).

The file is ``out`` (driftsim.io.output.target: ``~`` expanded, relative to the directory the command was
started in, driftsim.h5 inside it for a folder), or driftsim.h5 in the job's Hydra output folder. It is
claimed before any work (folder created, writable, no other run writing it: driftsim.io.output.claim). A
complete file of the same config is kept and the job skipped, so a sweep re-run with the same
``hydra.sweep.dir`` does only what is missing; ``overwrite=true`` recomputes, and replaces only a driftsim
run. Every job writes its own file atomically, so a failing or interrupted job loses no other job's file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import h5py
import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from threadpoolctl import threadpool_limits

from . import cost
from . import observe as obs
from .analysis import metrics
from .analysis.decode import decode_sim, decode_theory
from .analysis.ridge import fixed_ridge
from .analysis.sweeps import flat_config
from .config import DriftsimConfig, register_configs, validate
from .io import output, store
from .prior import Prior
from .sim.networks import resolve_device
from .results import Observed, PopulationTheory
from .sim.simulate import SessionRequest, simulate
from .tasks import make_task
from .theory import population
from .theory.covariance import predictor_covariance
from .theory.discretisation import Discretisation, discretise, first_step
from .theory.kernels import KernelModel
from .theory.mean import solve
from .times import record_times

__all__ = ["main", "run", "run_config", "output_path", "existing_run_differs", "task_arguments"]

log = logging.getLogger(__name__)
register_configs()
RUN_NAME = "driftsim.h5"  # a run's file in its job folder, or in the folder that out= names

# keys that say where and how a run is written, not what it computes
_NOT_COMPARED = ("out", "overwrite", "device", "limits.max_steps", "limits.max_grid", "limits.max_memory_gb")


def output_path(conf: DriftsimConfig) -> Path:
    """``out`` (``~`` expanded, relative to the launch directory; a trailing ``/`` or an existing folder:
    driftsim.h5 inside it), or driftsim.h5 in the job's Hydra output folder."""
    if conf.out is None:
        return Path(HydraConfig.get().runtime.output_dir) / RUN_NAME
    return output.target(conf.out, base=Path(to_absolute_path(".")), name=RUN_NAME)


def existing_run_differs(out: Path, config_yaml: str) -> Optional[str]:
    """None when ``out`` already holds a complete run of this config; otherwise why it may not be reused."""
    try:
        stored = flat_config(store.check_run(out))
    except store.StoreError as e:
        return str(e)
    wanted = flat_config(OmegaConf.to_container(OmegaConf.create(config_yaml)))
    differ = sorted(k for k in set(stored) | set(wanted)
                    if k not in _NOT_COMPARED and stored.get(k) != wanted.get(k))
    return f"it holds a run of another config (differs in {differ})" if differ else None


def task_arguments(task_conf: Any) -> dict[str, Any]:
    """The keyword arguments of ``tasks.make_task`` for a ``task`` config (a task dataclass of config.py), with
    ``task.root`` resolved against the directory the command was started in (a Hydra job may change it)."""
    args = dataclasses.asdict(task_conf)
    if args.get("root") is not None:
        args["root"] = to_absolute_path(os.path.expanduser(args["root"]))
    return args


def _prior(conf: DriftsimConfig) -> Prior:
    dyn = conf.dynamics
    return Prior(dyn.T, dyn.sigma, dyn.sigma0)


def _spread(n: int, k: int) -> list[int]:
    """min(n, k) indices evenly spread over range(n) (both classes of a task sorted by class)."""
    m = min(n, k)  # spread over the m taken, not over k: k > n would bunch them at the start
    return sorted({round(i * (n - 1) / max(m - 1, 1)) for i in range(m)})


def _add_covariance(theory, task, conf: DriftsimConfig, dev, t_learn, t_drift, disc: Discretisation,
                    progress: bool) -> None:
    """SPEC §10 covariance of theory.covariance_points training and test points, into ``theory``'s phases."""
    k = conf.theory.covariance_points
    cov = predictor_covariance(task.x_train.to(dev), task.x_test.to(dev), depth=conf.model.depth,
                               activation=conf.model.activation, prior=_prior(conf),
                               t_learn=t_learn, t0=conf.protocol.t0, t_drift=t_drift, tol=conf.theory.tol,
                               points=_spread(task.x_train.shape[0], k), test_points=_spread(task.x_test.shape[0], k),
                               discretisation=disc, progress=progress)
    for name, phase in cov.items():
        target = getattr(theory, name)
        target.var_train, target.cov_test = phase.var_train, phase.cov_test


def session_times(conf: DriftsimConfig) -> torch.Tensor:
    """observe.sessions drift times evenly spaced from the freeze (0) to t_drift, float64 [S]."""
    t = torch.linspace(0.0, conf.t_drift, conf.observe.sessions, dtype=torch.float64)
    t[-1] = conf.t_drift  # exactly: it is also the drift phase's last recorded time
    return t


def _population_theory(conf: DriftsimConfig, task, dev, t: torch.Tensor) -> PopulationTheory:
    """theory/population.py's closed forms at the sessions: PV and rate correlation, similarity, the fixed
    ridge decoder (λ = T/σ², the readout's own: for the last layer its output is the frozen readout's mean
    predictor) fitted on the training stimuli at the freeze and scored on the test stimuli (training
    stimuli when there are none)."""
    dyn, layer = conf.dynamics, population.layer_of(conf.observe.layer, conf.model.depth)
    args = dict(depth=conf.model.depth, activation=conf.model.activation, prior=Prior(dyn.T, dyn.sigma, dyn.sigma0),
                layer=layer)
    x = torch.cat([task.x_train, task.x_test]).to(dev)
    times = conf.protocol.t0 + t.to(dev)
    x_eval, y_eval = (task.x_test, task.y_test) if len(task.x_test) else (task.x_train, task.y_train)
    dec = population.fixed_decoder(task.x_train.to(dev), task.y_train.to(dev), x_eval.to(dev), y_eval.to(dev),
                                   t_fit=conf.protocol.t0, times=times, ridge=dyn.gamma,
                                   resolution=conf.theory.tol, **args)
    return PopulationTheory(t=t, layer=layer, ridge=dyn.gamma,
                            pv_correlation=population.pv_correlation(x, times=times, **args),
                            rate_correlation=population.rate_correlation(x, times=times, **args),
                            similarity=population.similarity(x, times=times, **args), decoder_output=dec.output,
                            decoder_fixed=dec.accuracy, decoder_output_inf=dec.output_inf,
                            decoder_fixed_inf=dec.accuracy_inf)


def _theory_units(conf: DriftsimConfig, task, dev, t: torch.Tensor, seed: np.random.SeedSequence) -> torch.Tensor:
    """Units of observe.networks independent infinite-width networks, sampled from the Gaussian process
    (theory/population.sample_units) at the sessions: [S, A, U, X]."""
    o, dyn = conf.observe, conf.dynamics
    units = obs.units_needed(o.sessions, o.cells, o.turnover)
    x = torch.cat([task.x_train, task.x_test]).to(dev)
    drawn = population.sample_units(x, depth=conf.model.depth, activation=conf.model.activation,
                                    prior=Prior(dyn.T, dyn.sigma, dyn.sigma0), times=conf.protocol.t0 + t.to(dev),
                                    cells=o.networks * units, seed=int(seed.generate_state(1)[0]), layer=o.layer)
    return drawn.reshape(len(t), o.networks, units, x.shape[0])


def _observe(conf: DriftsimConfig, task, units: torch.Tensor, t: torch.Tensor, seed: np.random.SeedSequence,
             stage: Optional[h5py.Group] = None) -> Observed:
    """Record ``units`` [S, A, U, X] (:func:`_record_network`), then compute each network's drift metrics
    (:func:`_measure_network`).

    The networks run in threads, one per available core: the draws, the larger numpy operations and BLAS
    release the GIL (2 cores: 2.7 → 1.7 s at the defaults); BLAS itself on one thread (threadpoolctl: many
    small operations, which its threads only slow, 10× on a loaded machine). While the metrics are computed,
    this thread writes the recordings to ``stage`` (a group of the run's scratch file: store.stage_responses),
    so that their compression (h5py releases the GIL) overlaps the metrics and the run file copies them as they
    are. A network's numbers depend only on its seed (``observe.network_seed``), never on the threads. An error
    or Ctrl-C drops the networks not begun and waits only for those running."""
    activity, times = units.detach().cpu().double().numpy(), t.numpy()
    networks = activity.shape[1]
    with threadpool_limits(limits=1), _threads(min(networks, _cores())) as pool:
        recordings = list(pool.map(lambda a: _record_network(conf, activity[:, a], obs.network_seed(seed, a)),
                                   range(networks)))
        measuring = [pool.submit(_measure_network, conf, task, activity[:, a], times, rec)
                     for a, rec in enumerate(recordings)]
        responses = np.stack([r.responses for r in recordings], axis=1)
        if stage is not None:
            responses = store.stage_responses(stage, responses)
        per_network, similarity, ridge = zip(*(m.result() for m in measuring))
    names = sorted(set.intersection(*(set(d.data_vars) for d in per_network)))
    found = {name: np.stack([d[name].values for d in per_network]) for name in names}
    found["decoder_ridge_fixed"], found["similarity"] = np.stack(ridge), np.stack(similarity)
    return Observed(t=times, responses=responses, cells=np.stack([r.cells for r in recordings], axis=1),
                    metrics=found)


def _record_network(conf: DriftsimConfig, activity: np.ndarray, seed: np.random.SeedSequence) -> obs.Recording:
    """One network's recording (observe.record_network of its activity [S, U, X])."""
    o = conf.observe
    return obs.record_network(activity, cells=o.cells, trials=o.trials, noise=o.noise, gain=o.gain,
                              baseline=o.baseline, noise_sd=o.noise_sd, turnover=o.turnover, seed=seed)


def _measure_network(conf: DriftsimConfig, task, activity: np.ndarray, t: np.ndarray, rec: obs.Recording) -> tuple:
    """One network's drift metrics (analysis.metrics.summary of its recording ``rec``; PV correlation over
    active cells for Poisson counts, over every cell otherwise), its similarity matrices, and the
    finite-population fixed ridge decoder on the noise-free activity [S, U, X] of the cells of session 0
    (analysis/ridge.py, ``decoder_ridge_fixed``)."""
    y = torch.cat([task.y_train, task.y_test]).cpu().numpy()
    P = len(task.y_train)
    fit, evaluate = np.arange(P), (np.arange(P, len(y)) if len(y) > P else np.arange(P))
    r = metrics.as_responses(rec.responses, time=t, labels=y)
    return (metrics.summary(r, cv_folds=conf.decode.cv_folds, seed=conf.seed,
                            active_only=conf.observe.noise == "poisson"),
            metrics.similarity(r).values,
            fixed_ridge(activity[:, rec.cells[0]], y[fit], fit, evaluate, y[evaluate], ridge=conf.dynamics.gamma)[1])


@contextmanager
def _threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, when the block fails (an error, Ctrl-C), drops the work not begun."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="driftsim")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _cores() -> int:
    """The cores this process may run on (a SLURM job's allocation, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def checked_cost(conf: DriftsimConfig) -> cost.Estimate:
    """The run's cost estimate, checked against ``limits`` (driftsim.cost): from the config alone, so the
    callers check it before they claim the output file."""
    est = cost.estimate(conf)
    cost.check_estimate(conf, est)
    return est


def run(conf: DriftsimConfig, config_yaml: str, out: Path, progress: bool = False,
        est: Optional[cost.Estimate] = None) -> Path:
    """Compute one run of a validated config and write it to ``out``; returns the path. Its cost is
    checked against ``limits`` first (``est``, else :func:`checked_cost`), the theory's grid once the task is
    known. A simulation streams its records, and the recordings are staged, to a scratch file beside ``out``
    (:func:`_spool`), open until the run is written."""
    with ExitStack() as files:
        return _run(conf, config_yaml, out, progress, est, files)


@contextmanager
def _spool(out: Path) -> Iterator[h5py.Group]:
    """The HDF5 file to which the simulation streams its records (output.scratch, beside ``out``): memory then
    holds one chunk of networks, and the run file copies them a block at a time; the recordings are staged
    there too (``observe/<source>``, :func:`_observe`)."""
    with output.scratch(out) as path, h5py.File(path, "w") as h5:
        yield h5


def _run(conf: DriftsimConfig, config_yaml: str, out: Path, progress: bool, est: Optional[cost.Estimate],
         files: ExitStack) -> Path:
    est = checked_cost(conf) if est is None else est
    task = make_task(**task_arguments(conf.task), seed=conf.seed)
    if conf.mode in ("theory", "both"):
        model = KernelModel(conf.model.activation, conf.model.depth, _prior(conf))
        cost.check_grid(conf, est, first_step(model, task.x_train, conf.theory.tol))
    log.info("task %s: P=%d training, Q=%d test points, N0=%d (%s)", task.name, task.x_train.shape[0],
             task.x_test.shape[0], task.x_train.shape[1], task.source)
    dyn = conf.dynamics
    t_learn = record_times(dyn.t_end, conf.record.n_times)
    t_drift = None if conf.t_drift is None else record_times(conf.t_drift, conf.record.n_times)
    y = task.y_train.cpu().numpy()
    decode_args = dict(cv_folds=conf.decode.cv_folds, bins=conf.record.hist_bins)
    theory = sim = pop_theory = None
    decoding, observed = {}, {}
    observing = conf.observe.sessions > 0
    t_sessions = session_times(conf) if observing else None
    spool = files.enter_context(_spool(out)) if observing or conf.mode in ("sim", "both") else None
    if conf.mode in ("theory", "both"):
        start = time.perf_counter()
        dev = resolve_device(conf.device)  # the theory computes where its inputs are
        # one discretisation for the mean and its covariance
        problem = dict(depth=conf.model.depth, activation=conf.model.activation,
                       prior=_prior(conf), t_learn=t_learn, t0=conf.protocol.t0,
                       t_drift=t_drift, tol=conf.theory.tol)
        disc = discretise(task.x_train.to(dev), task.x_test.to(dev), covariance=conf.theory.covariance,
                          memory_gb=conf.theory.memory_gb, progress=progress, **problem)
        theory = solve(task.x_train.to(dev), task.y_train.to(dev), task.x_test.to(dev), progress=progress,
                       discretisation=disc, **problem)
        log.info("theory: %d grid times, %.1f s", theory.grid_size, time.perf_counter() - start)
        if conf.theory.covariance:
            start = time.perf_counter()
            _add_covariance(theory, task, conf, dev, t_learn, t_drift, disc, progress)
            log.info("theory covariance: %.1f s", time.perf_counter() - start)
        decoding.update({("theory", p): d for p, d in decode_theory(
            theory, y, resolution=conf.theory.tol, **decode_args).items()})
        if observing:
            start = time.perf_counter()
            pop_theory = _population_theory(conf, task, dev, t_sessions)
            seed_units, seed_record = obs.observation_seed(conf.seed, "theory").spawn(2)
            observed["theory"] = _observe(conf, task, _theory_units(conf, task, dev, t_sessions, seed_units),
                                          t_sessions, seed_record, stage=spool.create_group("observe/theory"))
            log.info("theory population and recordings: %.1f s", time.perf_counter() - start)
    if conf.mode in ("sim", "both"):
        start = time.perf_counter()
        o = conf.observe
        request = (SessionRequest(t_sessions, population.layer_of(o.layer, conf.model.depth), o.networks,
                                  obs.units_needed(o.sessions, o.cells, o.turnover)) if observing else None)
        model, protocol, s = conf.model, conf.protocol, conf.sim
        sim = simulate(task.x_train, task.y_train, task.x_test, depth=model.depth, activation=model.activation,
                       width=model.width, prior=_prior(conf), t_learn=t_learn, t0=protocol.t0, t_drift=t_drift,
                       freeze=protocol.freeze, scheme=dyn.scheme, dt=dyn.dt, lam=dyn.lam,
                       mpl_inner_steps=dyn.mpl_inner_steps, ensemble=s.ensemble, dtype=s.dtype,
                       antithetic=s.antithetic, activity_units=s.activity_units, chunk=s.chunk, seed=conf.seed,
                       device=conf.device, progress=progress, sessions=request,
                       records=spool)
        log.info("simulation: %d networks in %d chunk(s) of at most %d, %.1f s", s.ensemble, sim.info["chunks"],
                 s.chunk, time.perf_counter() - start)
        decoding.update({("sim", p): d for p, d in decode_sim(
            sim, y, population_networks=conf.decode.population_networks, **decode_args).items()})
        if observing:
            start = time.perf_counter()
            observed["sim"] = _observe(conf, task, sim.sessions.activity, t_sessions,
                                       obs.observation_seed(conf.seed, "sim"), stage=spool.create_group("observe/sim"))
            log.info("sim recordings and metrics: %.1f s", time.perf_counter() - start)
    for (source, phase), d in decoding.items():
        log.info("decoding %s/%s: accuracy %.2f at the start, %.2f at the end", source, phase,
                 d.accuracy[0], d.accuracy[-1])
    for source, o in observed.items():
        m = o.metrics
        log.info("observed %s: PV correlation %.2f from session 0 to the last; decoders fixed %.2f → %.2f, "
                 "retrained %.2f → %.2f", source, m["pv_correlation"][:, 0, -1].mean(),
                 m["decoder_fixed"][:, 0].mean(), m["decoder_fixed"][:, -1].mean(),
                 m["decoder_retrained"][:, 0].mean(), m["decoder_retrained"][:, -1].mean())
    return store.write_run(out, config=config_yaml, seed=conf.seed, task=task, theory=theory, sim=sim,
                           decoding=decoding, versions={"hydra": hydra.__version__}, observed=observed,
                           population=pop_theory)


def compute_runs(folder: Union[str, os.PathLike], jobs: dict[str, Sequence[str]]) -> dict[str, store.Run]:
    """Compute runs in this process, as ``driftsim <overrides>`` would, one per job {name: overrides}, into
    ``folder/<name>.h5``, and read them back. A complete file of the same config is reused (as the app
    does), so re-running a notebook costs nothing; a driftsim run of another config there is recomputed,
    any other file refused (OutputError, "not a driftsim run")."""
    from hydra import compose, initialize_config_module

    runs = {}
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        for name, overrides in jobs.items():
            out = Path(os.path.expanduser(folder)) / f"{name}.h5"
            cfg = compose("config", overrides=[*overrides, f"out='{out}'"])  # quoted: names hold "="
            conf, config_yaml = validate(cfg), OmegaConf.to_yaml(cfg, resolve=True)
            est = checked_cost(conf)
            with _claimed_if_needed(out, config_yaml, overwrite=False, replace_other_config=True) as needed:
                if needed:
                    run(conf, config_yaml, out, est=est)
            runs[name] = store.read_run(out)
    return runs


def _must_compute(out: Path, config_yaml: str, overwrite: bool, replace_other_config: bool) -> bool:
    """Whether the run of ``config_yaml`` must be computed into ``out``: yes when there is no file, or with
    ``overwrite``; no when it holds a complete run of the same config (logged); a driftsim run of another
    config (or a remnant of one) is replaced with ``replace_other_config``, else refused (ValueError); a
    file that is not a driftsim run is always refused (store.check_replaceable)."""
    if not out.exists():
        return True
    store.check_replaceable(out)
    if overwrite:
        return True
    reason = existing_run_differs(out, config_yaml)
    if reason is None:
        log.info("complete run already in %s: skipped (overwrite=true recomputes it)", out)
        return False
    if replace_other_config:
        return True
    raise ValueError(f"out={str(out)!r} exists and {reason}; set overwrite=true to replace it, "
                     "or choose another out")


@contextmanager
def _claimed_if_needed(out: Path, config_yaml: str, **rules: bool) -> Iterator[bool]:
    """Whether the run must be computed into ``out`` (:func:`_must_compute` with ``rules``); when it must, the
    block runs as the only writer of ``out`` (output.claim). Reusing a complete run needs no lock (files are
    replaced only by an atomic rename), so runs in a read-only folder of results are reused too."""
    with output.os_errors(out):
        needed = _must_compute(out, config_yaml, **rules)
    if not needed:
        yield False
        return
    with output.claim(out):  # decided again as the only writer: another run may have just finished
        yield _must_compute(out, config_yaml, **rules)


def run_config(cfg: DictConfig, progress: bool = False) -> tuple[Path, bool]:
    """One job of the ``driftsim`` command in this process, from a composed config (``hydra.compose``).

    Validates ``cfg`` (every range check of driftsim.config), claims ``out`` (:func:`output_path`; its
    folder created, writable, no other run writing it: driftsim.io.output.claim) before any work, then
    computes the run and writes it there, unless ``out`` already holds a complete run of the same config:
    that file is kept and the job skipped.

    Parameters
    ----------
    cfg : DictConfig
        The composed config (keys: DESIGN.md "Config keys"); ``out`` must be set outside a Hydra job.
    progress : bool
        Progress bars of the theory and the simulation.

    Returns
    -------
    path : Path
        The run file.
    computed : bool
        False when a complete run of this config was already there.

    Raises
    ------
    ValueError
        A value out of range, or ``out`` holding something else while ``overwrite`` is false;
        ``output.OutputError`` (a ValueError): ``out`` cannot be written, another run is writing it, or it
        holds a file that is not a driftsim run.
    output.Interrupted
        Ctrl-C (a KeyboardInterrupt): nothing was written, no partial file is left.
    """
    conf: DriftsimConfig = validate(cfg)  # unknown keys and every range check of driftsim.config
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    out = output_path(conf)
    est = checked_cost(conf)  # before the claim: a refused run leaves no folder behind
    with _claimed_if_needed(out, config_yaml, overwrite=conf.overwrite, replace_other_config=False) as needed:
        if not needed:
            return out, False
        start = time.perf_counter()
        path = run(conf, config_yaml, out, progress=progress, est=est)
    log.info("wrote %s (%.1f s)", path, time.perf_counter() - start)
    return path, True


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    """Entry point of the ``driftsim`` console script (config keys: DESIGN.md "Config keys")."""
    single = HydraConfig.get().mode == RunMode.RUN
    try:
        path, _ = run_config(cfg, progress=single and sys.stderr.isatty())
    except (ValueError, FileNotFoundError, OmegaConfBaseException) as e:  # a user's mistake, named in e
        if not single:
            log.error("%s", e)  # in the job's log; Hydra reports the failed job once the others are done
            raise
        print(f"driftsim: error: {e}", file=sys.stderr)  # one clear line, no traceback
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C: output.Interrupted says what became of the file
        print(f"driftsim: {e or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    return str(path)
