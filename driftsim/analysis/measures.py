"""The numbers of SPEC §9 read off predictor trajectories: phase times, overshoot, early stopping,
prediction errors. Plain arrays in, so the tests of §9 apply them to ``mean.solve`` results directly.
"""
from __future__ import annotations

import numpy as np

from ..io import store
from .sweeps import flat_config

__all__ = ["crossing_time", "phase_times", "overshoot", "best_stopping", "prediction_error", "measures", "summary"]


def crossing_time(t: np.ndarray, d: np.ndarray, level: float, last: bool = False) -> float:
    """First (or ``last``) time at which the series d(t) crosses ``level``, interpolated linearly in log t.

    NaN when it never does. Used for the phase times of SPEC §9 findings 1–2.
    """
    t, d = np.asarray(t, dtype=float), np.asarray(d, dtype=float)
    side = np.sign(d - level)
    hits = np.nonzero(side[1:] != side[:-1])[0]
    if len(hits) == 0:
        return float("nan")
    i = hits[-1] if last else hits[0]
    w = (level - d[i]) / (d[i + 1] - d[i])
    lo = np.log(t[i]) if t[i] > 0 else np.log(t[i + 1]) - 1.0  # t = 0: one e-fold before the next time
    return float(np.exp(lo + w * (np.log(t[i + 1]) - lo)))


def phase_times(t: np.ndarray, f: np.ndarray, f_ntk: float, f_nngp: float,
                fraction: float = 0.9) -> tuple[float, float]:
    """Time scales of one predictor trajectory f(t) (a test point, SPEC §5.2–5.3).

    Gradient phase: first time f reaches ``fraction`` of the NTK equilibrium. Diffusive phase: the time
    at which f has covered half of the NTK → NNGP gap for good, the last time |f − f_nngp| crosses
    |f_ntk − f_nngp| / 2 (the rise from 0 may cross that level too, earlier).
    """
    t_grad = crossing_time(t, np.asarray(f) / f_ntk, fraction)
    t_diff = crossing_time(t, (np.asarray(f) - f_nngp) / (f_ntk - f_nngp), 0.5, last=True)
    return t_grad, t_diff


def overshoot(f: np.ndarray, f_nngp: float) -> float:
    """How far the trajectory f(t), starting at 0, goes past its NNGP equilibrium, relative to |f_nngp|
    (SPEC §9 finding 3); 0 for a monotonic approach from the side of 0."""
    return float(max(0.0, np.max(np.sign(f_nngp) * (np.asarray(f) - f_nngp)) / abs(f_nngp)))


def best_stopping(t: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    """(t*, err(t*)): the recorded time of least error, the best early-stopping point."""
    i = int(np.argmin(err))
    return float(t[i]), float(err[i])


def prediction_error(f: np.ndarray, y: np.ndarray, metric: str = "mse") -> np.ndarray:
    """Error of predictors f [n, Q] against labels y [Q] per time: mean squared error or 0–1 error."""
    f, y = np.asarray(f), np.asarray(y)
    if metric == "mse":
        return ((f - y) ** 2).mean(axis=-1)
    if metric == "01":
        return (np.sign(f) != y).mean(axis=-1)
    raise ValueError(f"metric={metric!r} is not allowed: 'mse' or '01'")


def measures(t: np.ndarray, f_test: np.ndarray, f_train: np.ndarray, y_test: np.ndarray, y_train: np.ndarray,
             f_ntk: float, f_nngp: float, point: int = 0) -> dict:
    """The SPEC §9 numbers of one theory trajectory (t [n], f_test [n, Q], f_train [n, P]) for test point
    ``point`` with NTK and NNGP equilibria f_ntk, f_nngp: phase times, overshoot, best early-stopping time
    t_best and its test MSE (all test points) against the equilibrium's, the training MSE at t_best."""
    f = np.asarray(f_test)[:, point]
    err = prediction_error(f_test, y_test)
    t_best, err_best = best_stopping(t, err)
    t_grad, t_diff = phase_times(t, f, f_ntk, f_nngp)
    train_err = prediction_error(f_train, y_train)
    return {"t_grad": t_grad, "t_diff": t_diff, "f_ntk": f_ntk, "f_nngp": f_nngp, "overshoot": overshoot(f, f_nngp),
            "t_best": t_best, "err_best": err_best, "err_end": float(err[-1]),
            "train_err_best": float(train_err[int(np.argmin(err))])}


def summary(run: store.Run, point: int = 0) -> dict:
    """:func:`measures` of a theory run (the synthetic task has one test point), after its config keys
    (dotted, as in ``sweeps.collect``)."""
    return {**flat_config(run.config), **measures(
        run["/theory/learn/t"], run["/theory/learn/f_test"], run["/theory/learn/f_train"], run["/task/y_test"],
        run["/task/y_train"], float(run["/theory/ntk/f_test"][point]), float(run["/theory/nngp/f_test"][point]),
        point)}


# ---------------------------------------------------------------------------------------------- helpers
