"""Theory benchmark: the whole learning trajectory to the NNGP equilibrium plus a drift phase
of the same length, P = 100 MNIST 0/1 examples (embedded data), 20 test points, depth 3, relu,
T = 1e-3, σ = σ0 = 1, tol = 1e-4. Reports wall time, peak memory, the error against a refined grid, and
the cost of a straightforward uniform-grid all-pairs trapezoid solution of the same equations.

    python benchmarks/bench_theory.py            # each measurement in a fresh subprocess
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch

from driftsim.theory.kernels import KernelModel
from driftsim.prior import Prior
from driftsim.theory import reference
from driftsim.tasks import make_task
from driftsim.theory.mean import solve
from driftsim.times import record_times
from driftsim.theory.reference import solve_second_kind
from driftsim.theory.volterra import graded_grid

PRIOR = Prior(T=1e-3, sigma=1.0, sigma0=1.0)
DEPTH, ACT = 3, "relu"


def problem():
    task = make_task("mnist", classes=[0, 1], n_per_class=50, n_test=20, seed=0)
    t_end = 25 / PRIOR.gamma
    return task, record_times(t_end, 40), t_end


def run_solve(tol: float) -> dict:
    task, t_learn, t_end = problem()
    start = time.perf_counter()
    res = solve(task.x_train, task.y_train, task.x_test, depth=DEPTH, activation=ACT, prior=PRIOR, t_learn=t_learn,
                t0=t_end, t_drift=record_times(t_end, 40), tol=tol, progress=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "grid": res.grid_size, "fit_error": res.fit_error,
            "f": torch.cat([res.learn.f_train.flatten(), res.learn.f_test.flatten(), res.drift.f_test.flatten()]).tolist(),
            "eq_err": float((res.learn.f_test[-1] - res.nngp.f_test).abs().max())}


def run_naive(rows: int) -> dict:
    """Uniform grid at the gradient-phase step h = 0.1/λ_max (SPEC §11), every pair K_d(t_i, t_j) evaluated:
    time the first ``rows`` rows and extrapolate the O(n²) cost to the n = t_end/h rows of the run."""
    task, _, t_end = problem()
    model = KernelModel(ACT, DEPTH, PRIOR)
    h = 0.1 / model.max_ntk_eigenvalue(task.x_train)
    t = graded_grid(rows * h, h, h, 1e-12)
    x = task.x_train
    start = time.perf_counter()
    solve_second_kind(lambda i, js: reference.ndk(model, t[i].expand(len(js)), t[js], x, x), t, task.y_train)
    wall = time.perf_counter() - start
    n_full = 2 * t_end / h  # learning and drift phases
    return {"rows": rows, "wall_s": wall, "n_full": n_full, "extrapolated_s": wall * (n_full / rows) ** 2,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    if len(sys.argv) > 1:
        kind, arg = sys.argv[1], float(sys.argv[2])
        print(json.dumps(run_solve(arg) if kind == "solve" else run_naive(int(arg))))
        return
    sub = lambda *a: json.loads(subprocess.run([sys.executable, __file__, *map(str, a)], check=True,  # noqa: E731
                                               capture_output=True, text=True).stdout)
    fast, ref = sub("solve", 1e-4), sub("solve", 1e-6)
    err = max(abs(a - b) for a, b in zip(fast["f"], ref["f"]))
    naive = [sub("naive", r) for r in (200, 400)]
    print(f"driftsim tol=1e-4: {fast['wall_s']:.1f} s, peak RSS {fast['peak_rss_mb']:.0f} MB, grid {fast['grid']} "
          f"points, expansion fit error {fast['fit_error']:.1e}")
    print(f"  max |f − f(tol=1e-6)| over learning (train, test) and drift (test): {err:.1e}; "
          f"|f_test(∞) − NNGP| = {fast['eq_err']:.1e}")
    print(f"  refined tol=1e-6: {ref['wall_s']:.1f} s, grid {ref['grid']}")
    for nv in naive:
        print(f"naive uniform all-pairs: {nv['rows']} rows in {nv['wall_s']:.1f} s (peak RSS {nv['peak_rss_mb']:.0f} MB);"
              f" the run needs {nv['n_full']:.2e} rows → ~{nv['extrapolated_s']:.1e} s "
              f"(ratio ~{nv['extrapolated_s'] / fast['wall_s']:.0e})")


if __name__ == "__main__":
    main()
