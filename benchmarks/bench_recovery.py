"""Recovery benchmark: recordings of the model at a known drift rate, each saved as an NWB file and read
back, fitted by driftsim.analysis.fit (what tests/analysis/test_fit.py checks in memory, here through
the files a lab would get).

100 animals of relu depth 3 at γ = 0.5 per unit of session time (units sampled from the infinite-width
Gaussian process at equilibrium, 200 cells, 6 sessions at t = 0..5, 9 stimuli of the synthetic task, 4
trials, Poisson counts of rate 5·φ + 0.5); each → NWB → load_recording → fit with the split-half noise
ceiling and 200 BCa bootstrap resamples; the same recording fitted with the wrong depth (relu depth 1)
and the wrong activation (erf depth 3).

    python benchmarks/bench_recovery.py [--animals 100] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from driftsim.analysis import fit
from driftsim.io import load_recording, nwb
from driftsim.tasks import synthetic_task

GAMMA = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="folder for the NWB files (default: a temporary one)")
    args = parser.parse_args()
    task = synthetic_task(n_train=8, overlap=0.75)
    x = torch.cat([task.x_train, task.x_test])
    truth = fit.Architecture(3, "relu", inputs=x)
    wrong = {"relu depth 1": fit.Architecture(1, "relu", inputs=x), "erf depth 3": fit.Architecture(3, "erf", inputs=x)}
    now = datetime.datetime.now(datetime.timezone.utc)
    clock = {"sample": 0.0, "write": 0.0, "read": 0.0, "fit": 0.0}
    start = time.perf_counter()
    recs = fit.theory_recordings(truth, GAMMA, np.arange(6.0), animals=args.animals, seed=11)
    clock["sample"] = time.perf_counter() - start
    covered, first, gammas, widths, excess = 0, 0, [], [], {k: [] for k in wrong}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        for a, rec in enumerate(recs):
            t0 = time.perf_counter()
            path = nwb.write_nwb(rec, folder / f"animal{a:03d}.nwb", subject_id=f"animal{a}", session_start_time=now,
                                 notes="driftsim recovery benchmark", description=f"animal {a} at γ = {GAMMA}")
            t1 = time.perf_counter()
            back = load_recording(path)
            t2 = time.perf_counter()
            result = fit.fit_drift_rate(back, truth, n_boot=200, seed=a)
            others = {k: fit.fit_drift_rate(back, arch, n_boot=0).residual for k, arch in wrong.items()}
            t3 = time.perf_counter()
            clock["write"] += t1 - t0
            clock["read"] += t2 - t1
            clock["fit"] += t3 - t2
            lo, hi = result.gamma_ci
            covered += lo <= GAMMA <= hi
            first += result.residual < min(others.values())
            gammas.append(result.gamma)
            widths.append(hi - lo)
            for k, v in others.items():
                excess[k].append(v / result.residual)
    n = args.animals
    print(f"{n} animals through NWB: the 95% interval covers γ = {GAMMA} in {covered}/{n}")
    print(f"fitted γ: mean {np.mean(gammas):.4f}, sd {np.std(gammas):.4f}; median interval width {np.median(widths):.3f}")
    print(f"the true architecture has the smallest residual in {first}/{n}")
    for k, v in excess.items():
        print(f"  residual of {k} / true: median {np.median(v):.2f}, larger in {np.sum(np.asarray(v) > 1)}/{n}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in clock.items()) + f", total {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
