"""Cost of the recordings and their drift metrics against the run they follow (issue's target: at most
that run's time), at the app's defaults with ``observe.sessions=10`` (mode theory: MNIST 0/1, P = Q = 100,
depth 1, relu, T = 1e-3; 4 networks sampled from the Gaussian process, 200 cells, 10 Poisson trials).

    python benchmarks/bench_observe.py [override ...]     e.g. mode=both observe.cells=500

Prints wall and CPU (process) seconds per stage: the run without recordings (theory; simulation in
mode sim/both), the infinite-population closed forms, sampling the units, the observation model, and the
metrics (analysis.metrics.summary per network, similarity, the ridge decoder); then the target itself: the
whole run by the app's clock (``app.run``, task to written file, as the log's "wrote ... (N s)") with
``observe.sessions=0`` and with the recordings.
"""
from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from driftsim import app
from driftsim import observe as obs
from driftsim.analysis import metrics
from driftsim.config import validate
from driftsim.prior import Prior
from driftsim.sim.simulate import SessionRequest, simulate
from driftsim.tasks import make_task
from driftsim.theory.mean import solve
from driftsim.theory.population import layer_of
from driftsim.times import record_times


REPEAT = 3  # the least of three: the machine's other work only adds time


class Clock:
    def __init__(self):
        self.rows = []

    def __call__(self, name, fn, *args, **kwargs):
        best = (math.inf, math.inf)
        for _ in range(REPEAT):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn(*args, **kwargs)
            best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
        self.rows.append((name, *best))
        return out


def _whole_run(overrides, out: Path):
    """The app's run of a config into ``out`` (app.run: task to written file), as a callable."""
    cfg = compose("config", overrides=[*overrides, f"out='{out}'", "overwrite=true"])
    conf, config_yaml = validate(cfg), OmegaConf.to_yaml(cfg, resolve=True)
    return lambda: app.run(conf, config_yaml, out)


def main(overrides):
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        cfg = compose("config", overrides=["observe.sessions=10", *overrides])
        folder = Path(tempfile.mkdtemp(prefix="bench_observe_"))
        whole = {k: _whole_run([f"observe.sessions={k}", *overrides], folder / f"run{k}.h5")
                 for k in (0, cfg.observe.sessions)}
    conf = OmegaConf.to_object(cfg)
    clock, dev = Clock(), torch.device("cpu")
    task = make_task(**app.task_arguments(conf.task), seed=conf.seed)
    dyn = conf.dynamics
    t_learn, t_drift = record_times(dyn.t_end, conf.record.n_times), record_times(conf.t_drift, conf.record.n_times)
    t = app.session_times(conf)
    sources = {}
    if conf.mode in ("theory", "both"):
        clock("run: theory (mean predictor, drift)", solve, task.x_train, task.y_train, task.x_test,
              depth=conf.model.depth, activation=conf.model.activation, prior=Prior(dyn.T, dyn.sigma, dyn.sigma0),
              t_learn=t_learn, t0=conf.protocol.t0, t_drift=t_drift, tol=conf.theory.tol, progress=False)
        clock("observe: population closed forms", app._population_theory, conf, task, dev, t)
        seed_units, _ = obs.observation_seed(conf.seed, "theory").spawn(2)
        sources["theory"] = clock("observe: sample units", app._theory_units, conf, task, dev, t, seed_units)
    if conf.mode in ("sim", "both"):
        o = conf.observe
        request = SessionRequest(t, layer_of(o.layer, conf.model.depth), o.networks,
                                 obs.units_needed(o.sessions, o.cells, o.turnover))
        m, s = conf.model, conf.sim
        sim = clock("run: simulation (with sessions)", simulate, task.x_train, task.y_train, task.x_test,
                    depth=m.depth, activation=m.activation, width=m.width, prior=Prior(dyn.T, dyn.sigma, dyn.sigma0),
                    t_learn=t_learn, t0=conf.protocol.t0, t_drift=t_drift, freeze=conf.protocol.freeze,
                    scheme=dyn.scheme, dt=dyn.dt, lam=dyn.lam, mpl_inner_steps=dyn.mpl_inner_steps,
                    ensemble=s.ensemble, dtype=s.dtype, antithetic=s.antithetic, chunk=s.chunk, seed=conf.seed,
                    device="cpu", progress=False, sessions=request)
        sources["sim"] = sim.sessions.activity
    o = conf.observe
    for source, units in sources.items():
        rec = clock(f"observe: record ({source})", obs.record, units, cells=o.cells, trials=o.trials, noise=o.noise,
                    gain=o.gain, baseline=o.baseline, noise_sd=o.noise_sd, turnover=o.turnover,
                    seed=np.random.SeedSequence(0))
        y = torch.cat([task.y_train, task.y_test]).numpy()
        r = metrics.as_responses(rec.responses[:, 0], time=t.numpy(), labels=y)
        clock(f"metrics: summary, one network ({source})", metrics.summary, r, cv_folds=conf.decode.cv_folds,
              seed=conf.seed, active_only=o.noise == "poisson")
        clock(f"metrics: decoders alone, one network ({source})", metrics.decoders, r, cv_folds=conf.decode.cv_folds)
        clock(f"observe + metrics, all {o.networks} networks ({source})", app._observe, conf, task, units, t,
              np.random.SeedSequence(1))
    width = max(len(n) for n, _, _ in clock.rows)
    print(f"{'stage':<{width}}  wall s   cpu s   (least of {REPEAT})")
    for name, wall, cpu in clock.rows:
        print(f"{name:<{width}}  {wall:6.2f}  {cpu:6.2f}")
    # what the app adds per source: the closed forms and the sampling (theory), then recording + metrics
    run = [r for r in clock.rows if r[0].startswith("run:")]
    added = [r for r in clock.rows if r[0].startswith(("observe: population", "observe: sample", "observe + metrics"))]
    for k, what in ((1, "wall"), (2, "cpu")):
        cost, base = sum(r[k] for r in added), sum(r[k] for r in run)
        print(f"observation adds {cost:.2f} {what} s to a run of {base:.2f}: {cost / base:.2f}x")
    # the target, by the app's clock: the whole run alone and with the recordings, alternated
    times = {k: [] for k in whole}
    for _ in range(REPEAT):
        for k, fn in whole.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    alone, observed = (min(times[k]) for k in whole)
    print(f"the whole run (app.run, least of {REPEAT}): {alone:.2f} s alone, {observed:.2f} s with "
          f"observe.sessions={conf.observe.sessions}: the recordings add {observed - alone:.2f} s, "
          f"{(observed - alone) / alone:.2f}x")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
