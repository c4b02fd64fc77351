"""The ``driftsim`` command: one Hydra run, or a sweep (``-m``), from config to HDF5 file.

Pipeline of one run (DESIGN.md "Data flow"): validate the config (driftsim.config) → task (tasks.py,
SPEC §7) → recorded times (times.py; learning 0..dynamics.t_max, drift 0..t_drift after protocol.t0)
→ mean-predictor theory (mode theory/both, SPEC §5–6) with its covariance (§10, theory/covariance.py)
and/or Langevin ensembles (mode sim/both, §8)
→ decoding (analysis/decode.py) → the run file (io/store.py, schema driftsim/1).

The file is ``out``, resolved against the directory the command was started in, or driftsim.h5 in the
job's Hydra output folder. A complete file of the same config is kept and the job skipped, so a sweep
re-run with the same ``hydra.sweep.dir`` does only what is missing; ``overwrite=true`` recomputes.
Every job writes its own file atomically, so a failing job of a sweep loses no other job's file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .analysis.decode import decode_sim, decode_theory
from .analysis.sweeps import flat_config
from .config import DriftsimConfig, register_configs, validate
from .io import store
from .prior import Prior
from .sim.networks import resolve_device
from .sim.simulate import simulate
from .tasks import make_task
from .theory.covariance import predictor_covariance
from .theory.mean import solve
from .times import record_times

__all__ = ["main", "run", "output_path", "existing_run_differs", "task_arguments"]

log = logging.getLogger(__name__)
register_configs()

# keys that say where and how a run is written, not what it computes
_NOT_COMPARED = ("out", "overwrite", "device")


def output_path(conf: DriftsimConfig) -> Path:
    """``out`` relative to the launch directory, or driftsim.h5 in the job's Hydra output folder."""
    if conf.out is None:
        return Path(HydraConfig.get().runtime.output_dir) / "driftsim.h5"
    return Path(to_absolute_path(conf.out))


def existing_run_differs(out: Path, config_yaml: str) -> Optional[str]:
    """None when ``out`` already holds a complete run of this config; otherwise why it may not be reused."""
    try:
        stored = flat_config(store.read_run(out).config)
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
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(n, k))})


def _add_covariance(theory, task, conf: DriftsimConfig, dev, t_learn, t_drift, progress: bool) -> None:
    """SPEC §10 covariance of theory.covariance_points training and test points, into ``theory``'s phases."""
    k = conf.theory.covariance_points
    cov = predictor_covariance(task.x_train.to(dev), task.x_test.to(dev), depth=conf.model.depth,
                               activation=conf.model.activation, prior=_prior(conf),
                               t_learn=t_learn, t0=conf.protocol.t0, t_drift=t_drift, tol=conf.theory.tol,
                               points=_spread(task.x_train.shape[0], k), test_points=_spread(task.x_test.shape[0], k),
                               discretisation=theory.discretisation, progress=progress)
    for name, phase in cov.items():
        target = getattr(theory, name)
        target.var_train, target.cov_test = phase.var_train, phase.cov_test


def run(conf: DriftsimConfig, config_yaml: str, out: Path, progress: bool = False) -> Path:
    """Compute one run of a validated config and write it to ``out``; returns the path."""
    task = make_task(**task_arguments(conf.task), seed=conf.seed)
    log.info("task %s: P=%d training, Q=%d test points, N0=%d (%s)", task.name, task.x_train.shape[0],
             task.x_test.shape[0], task.x_train.shape[1], task.source)
    dyn = conf.dynamics
    t_learn = record_times(dyn.t_end, conf.record.n_times)
    t_drift = None if conf.t_drift is None else record_times(conf.t_drift, conf.record.n_times)
    y = task.y_train.cpu().numpy()
    decode_args = dict(cv_folds=conf.decode.cv_folds, bins=conf.record.hist_bins)
    theory = sim = None
    decoding = {}
    if conf.mode in ("theory", "both"):
        start = time.perf_counter()
        dev = resolve_device(conf.device)  # the theory computes where its inputs are
        theory = solve(task.x_train.to(dev), task.y_train.to(dev), task.x_test.to(dev), depth=conf.model.depth,
                       activation=conf.model.activation, prior=_prior(conf),
                       t_learn=t_learn, t0=conf.protocol.t0, t_drift=t_drift, tol=conf.theory.tol,
                       progress=progress, for_covariance=conf.theory.covariance)
        log.info("theory: %d grid times, %.1f s", theory.grid_size, time.perf_counter() - start)
        if conf.theory.covariance:
            start = time.perf_counter()
            _add_covariance(theory, task, conf, dev, t_learn, t_drift, progress)
            log.info("theory covariance: %.1f s", time.perf_counter() - start)
        decoding.update({("theory", p): d for p, d in decode_theory(
            theory, y, resolution=conf.theory.tol, **decode_args).items()})
    if conf.mode in ("sim", "both"):
        start = time.perf_counter()
        model, protocol, s = conf.model, conf.protocol, conf.sim
        sim = simulate(task.x_train, task.y_train, task.x_test, depth=model.depth, activation=model.activation,
                       width=model.width, prior=_prior(conf), t_learn=t_learn, t0=protocol.t0, t_drift=t_drift,
                       freeze=protocol.freeze, scheme=dyn.scheme, dt=dyn.dt, lam=dyn.lam,
                       mpl_inner_steps=dyn.mpl_inner_steps, ensemble=s.ensemble, dtype=s.dtype,
                       antithetic=s.antithetic, activity_units=s.activity_units, seed=conf.seed,
                       device=conf.device, progress=progress)
        log.info("simulation: %d networks, %.1f s", conf.sim.ensemble, time.perf_counter() - start)
        decoding.update({("sim", p): d for p, d in decode_sim(
            sim, y, population_networks=conf.decode.population_networks, **decode_args).items()})
    for (source, phase), d in decoding.items():
        log.info("decoding %s/%s: accuracy %.2f at the start, %.2f at the end", source, phase,
                 d.accuracy[0], d.accuracy[-1])
    return store.write_run(out, config=config_yaml, seed=conf.seed, task=task, theory=theory, sim=sim,
                           decoding=decoding, versions={"hydra": hydra.__version__})


def compute_runs(folder: Union[str, os.PathLike], jobs: dict[str, Sequence[str]]) -> dict[str, store.Run]:
    """Compute runs in this process, as ``driftsim <overrides>`` would, one per job {name: overrides}, into
    ``folder/<name>.h5``, and read them back. A complete file of the same config is reused (as the app
    does), so re-running a notebook costs nothing."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    runs = {}
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        for name, overrides in jobs.items():
            out = Path(folder) / f"{name}.h5"
            cfg = compose("config", overrides=[*overrides, f"out='{out}'"])  # quoted: names hold "="
            config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
            if not out.exists() or existing_run_differs(out, config_yaml) is not None:
                run(validate(cfg), config_yaml, out)
            runs[name] = store.read_run(out)
    return runs


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    """Entry point of the ``driftsim`` console script (config keys: DESIGN.md "Config keys")."""
    single = HydraConfig.get().mode == RunMode.RUN
    try:
        conf = validate(cfg)  # unknown keys and every range check of driftsim.config
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        out = output_path(conf)
        if out.exists() and not conf.overwrite:
            reason = existing_run_differs(out, config_yaml)
            if reason is None:
                log.info("complete run already in %s: skipped (overwrite=true recomputes it)", out)
                return str(out)
            raise ValueError(f"out={str(out)!r} exists and {reason}; set overwrite=true to replace it, "
                             "or choose another out")
        start = time.perf_counter()
        path = run(conf, config_yaml, out, progress=single and sys.stderr.isatty())
    except (ValueError, FileNotFoundError, OmegaConfBaseException) as e:  # a user's mistake, named in e
        if not single:
            log.error("%s", e)  # in the job's log; Hydra reports the failed job once the others are done
            raise
        print(f"driftsim: error: {e}", file=sys.stderr)  # one clear line, no traceback
        sys.exit(2)
    log.info("wrote %s (%.1f s)", path, time.perf_counter() - start)
    return str(path)
