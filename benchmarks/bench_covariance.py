"""Covariance benchmark: the SPEC §10 covariance over the ensemble against the mean solution it
accompanies, on the theory benchmark's problem (P = 100 MNIST 0/1, depth 3, relu, T = 1e-3, σ = σ0 = 1, learning to
25σ²/T and a drift of the same length, 40 recorded times per phase, tol = 1e-4), for 3 test points; the
same with erf, depth 2 and σ0 = 0.5 (the prior is then not stationary: no fluctuation–dissipation
shortcut, u-dependent coefficients); and the app's default of 8 training + 8 test points. The covariance
reuses the mean's discretisation, as the app does (with σ0 = σ only its expansion: the rows run on their
own lag grid). Its error is measured against tol = 1e-5.
Times are the best of two calls.

    python benchmarks/bench_covariance.py [--no-reference]
"""
from __future__ import annotations

import sys
import time

import torch
from bench_theory import PRIOR, problem

from driftsim.theory.covariance import predictor_covariance
from driftsim.theory.discretisation import discretise, lag_grid
from driftsim.prior import Prior
from driftsim.theory.mean import solve
from driftsim.times import record_times


def timed(fn, repeats: int = 2):
    """Result and best wall time of ``repeats`` calls (the first call of a size pays for fresh memory)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def case(name: str, prior: Prior, act: str, depth: int, n_test: int, points: list, reference: bool) -> None:
    task, t_learn, t_end = problem()
    x_test = task.x_test[:n_test]
    kw = dict(depth=depth, activation=act, prior=prior, t_learn=t_learn, t0=t_end, t_drift=record_times(t_end, 40))
    mean, t_mean = timed(lambda: solve(task.x_train, task.y_train, x_test, progress=False, **kw))
    # as the app does with theory.covariance: one discretisation that also expands K_GP (σ0 ≠ σ), passed to
    # the mean solution and to the covariance
    _, t_disc = timed(lambda: discretise(task.x_train, x_test, **kw))
    disc, t_disc_fc = timed(lambda: discretise(task.x_train, x_test, covariance=True, **kw))
    cov, t_cov = timed(lambda: predictor_covariance(task.x_train, x_test, points=points, discretisation=disc,
                                                    **kw))
    # with σ0 = σ the discretisation fits nothing more for the covariance: its two timings differ by noise alone
    extra = max(t_disc_fc - t_disc, 0.0) if prior.sigma0 != prior.sigma else 0.0
    added = extra + t_cov
    if prior.sigma0 == prior.sigma:
        include = torch.cat([t_learn, torch.tensor([t_end], dtype=torch.float64)])
        grid = f"lag grid {lag_grid(disc, prior.gamma, include).shape[0]}"
    else:
        grid = f"mean's grid, {extra:.2f} s expanding K_GP"
    line = (f"{name}: mean {t_mean:.2f} s (grid {mean.grid_size}); covariance of {len(points)} training + "
            f"{n_test} test points adds {added:.2f} s ({t_cov:.2f} s sweep, {grid}) = {added / t_mean:.2f} × "
            f"the mean")
    if reference:
        ref, t_ref = timed(lambda: predictor_covariance(task.x_train, x_test, points=points, tol=1e-5, **kw), 1)
        line += f"; max deviation from tol = 1e-5 ({t_ref:.0f} s): {deviation(cov, ref, points):.1e}"
        if prior.sigma0 == prior.sigma:
            # the other route: a prior a hair off σ0 = σ takes the backward sweep on the mean's grid
            kw["prior"] = Prior(T=prior.T, sigma=prior.sigma, sigma0=prior.sigma0 * (1 - 1e-12))
            other, t_other = timed(lambda: predictor_covariance(task.x_train, x_test, points=points, tol=1e-5,
                                                                **kw), 1)
            line += f"; from the backward sweep at tol = 1e-5 ({t_other:.0f} s): {deviation(cov, other, points):.1e}"
    print(line, flush=True)


def deviation(a: dict, b: dict, points: list) -> float:
    """Largest difference of two covariances over both phases (test covariances, chosen training variances)."""
    err = max(float((a[ph].cov_test - b[ph].cov_test).abs().max()) for ph in ("learn", "drift"))
    if points:
        err = max([err] + [float((a[ph].var_train[:, points] - b[ph].var_train[:, points]).abs().max())
                           for ph in ("learn", "drift")])
    return err


def main():
    reference = "--no-reference" not in sys.argv
    case("relu, σ0 = σ", PRIOR, "relu", 3, 3, [], reference)
    case("relu, σ0 = σ, 2 training points", PRIOR, "relu", 3, 3, [0, 50], reference)
    case("erf, σ0 = 0.5σ", Prior(T=PRIOR.T, sigma=1.0, sigma0=0.5), "erf", 2, 3, [], reference)
    case("relu, σ0 = σ, app default points", PRIOR, "relu", 3, 8, list(range(0, 100, 13))[:8], False)
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
