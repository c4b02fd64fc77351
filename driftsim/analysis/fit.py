"""The model's drift rate fitted to a recording: least squares of the recording's population-vector (PV)
correlation against elapsed time on the theory's closed form, with a bootstrap over cells.

At weight equilibrium the infinite-population PV correlation between two sessions Δ apart is a function
of ρ = e^(−γΔ) alone, r∞(ρ) (driftsim.theory.population.stationary_pv_correlation; SPEC §2, §3.1, §4),
fixed by the architecture (depth, activation, σ, observed layer) and the stimuli. Trial noise that is
independent between sessions scales every off-diagonal correlation by the same factor, the noise ceiling
c ≤ 1, so the model of the recording's elapsed-time curve r(Δ_k) (lags k = 1..S−1, Deitch et al. 2021) is

    r(Δ) = c · r∞(e^(−γ Δ))

with γ in the inverse unit of the recording's session times (per day for days). For each γ the best c
is linear least squares; γ minimises the remaining sum of squares (a grid over log γ, refined by
scipy.optimize.elementwise.find_minimum). The confidence intervals are BCa bootstrap intervals over cells
(scipy.stats.bootstrap): cells are the independent units of the infinite-width population (SPEC §3.1).

:func:`rank` fits one recording with the architecture of every run of a sweep and orders the runs by
the fit's residual: the distance between the recording's curve and that configuration's model curve.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.interpolate import CubicSpline
from scipy.optimize.elementwise import find_minimum
from scipy.stats import bootstrap

from ..io.store import PathLike, read_run
from ..theory.population import stationary_pv_correlation
from .metrics import check_responses

__all__ = ["Architecture", "Fit", "model_curve", "pv_curves", "fit_drift_rate", "architecture_of", "rank"]

_TABLE = 513  # nodes of r∞'s table, in s = sqrt(1 − ρ): relu's (1 − ρ)^(3/2) term is smooth in s
_GRID = 241  # log γ grid that brackets the least-squares minimum
_SPAN = (1e-3, 1e2)  # γ range: γ·Δ_max ≥ 1e-3 and γ·Δ_min ≤ 1e2 (outside: a flat or vanishing curve)


@dataclass(frozen=True)
class Architecture:
    """What the closed form needs: SPEC §1.1 depth and φ, the prior std σ, the observed layer (1..depth,
    None: the last) and the stimuli [X, N0] (None: one stimulus with |x|²/N0 = 1; only |x|²/N0 matters,
    and for relu and linear φ nothing about the stimuli does)."""
    depth: int = 1
    activation: str = "relu"
    sigma: float = 1.0
    layer: Optional[int] = None
    inputs: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    def describe(self) -> dict:
        return {"depth": self.depth, "activation": self.activation, "sigma": self.sigma, "layer": self.layer,
                "stimuli": "unit norm" if self.inputs is None else int(self.inputs.shape[0])}


def model_curve(arch: Architecture) -> CubicSpline:
    """r∞(ρ) of ``arch`` as a cubic spline in ρ ∈ [0, 1] (tabulated from the closed form, float64)."""
    x = torch.ones(1, 1, dtype=torch.float64) if arch.inputs is None else torch.as_tensor(arch.inputs)
    s = np.linspace(0.0, 1.0, _TABLE)
    rho = 1.0 - s ** 2
    r = stationary_pv_correlation(x, depth=arch.depth, activation=arch.activation, sigma=arch.sigma,
                                  rho=torch.as_tensor(rho), layer=arch.layer).cpu().numpy()
    table = CubicSpline(s, r)
    return lambda p: table(np.sqrt(np.clip(1.0 - np.asarray(p), 0.0, 1.0)))


def pv_curves(values: np.ndarray, weights: np.ndarray, active_only: bool = True) -> np.ndarray:
    """Elapsed-time curves of the PV correlation for weighted populations (a bootstrap over cells).

    The definitions of driftsim.analysis.metrics.pv_correlation and elapsed_curve (Deitch et al. 2021:
    corr over the cells active in both sessions, mean over stimuli, mean of the lag's off-diagonal),
    with cell c counted ``weights[b, c]`` times in population b.

    Parameters
    ----------
    values : ndarray [S, C, X]
        Trial-averaged responses.
    weights : ndarray [B, C]
        Non-negative multiplicities of the cells (ones: the recording itself).
    active_only : bool
        Keep only cells with a positive mean response in both sessions of a pair.

    Returns
    -------
    ndarray [B, S − 1]
        r(lag) for lags 1..S−1.
    """
    S = values.shape[0]
    v = values - values.mean(axis=1, keepdims=True)  # centred once: the sums below stay well conditioned
    active = values.mean(axis=2) > 0 if active_only else np.ones(values.shape[:2], bool)
    pairs = np.zeros((weights.shape[0], S, S))
    for i in range(S):
        for j in range(i + 1, S):
            w = weights * (active[i] & active[j])
            n = w.sum(axis=1, keepdims=True)
            a, b = v[i], v[j]
            ma, mb = w @ a / n, w @ b / n
            cov = w @ (a * b) / n - ma * mb
            var_a, var_b = w @ (a * a) / n - ma ** 2, w @ (b * b) / n - mb ** 2
            pairs[:, i, j] = (cov / np.sqrt(var_a * var_b)).mean(axis=1)
    return np.stack([np.diagonal(pairs, offset=k, axis1=1, axis2=2).mean(axis=1) for k in range(1, S)], axis=1)


def _fit_curves(r: np.ndarray, elapsed: np.ndarray, curve, ceiling: bool):
    """Least squares of r [B, K] on c·curve(e^(−γ·elapsed)): γ [B], c [B], residual sum of squares [B]."""
    u = np.linspace(np.log(_SPAN[0] / elapsed.max()), np.log(_SPAN[1] / elapsed.min()), _GRID)

    def solve(m, data):  # best c for each model curve m [..., K] and data [..., K]; sum of squares
        norm = (m * m).sum(-1)
        c = ((m * data).sum(-1) / np.where(norm > 0, norm, 1.0)) if ceiling else np.ones(m.shape[:-1])
        return c, ((data - c[..., None] * m) ** 2).sum(-1)

    m = curve(np.exp(-np.exp(u)[:, None] * elapsed))  # [G, K]
    sse = solve(m[None], r[:, None, :])[1]  # [B, G]
    i = np.clip(sse.argmin(axis=1), 1, _GRID - 2)
    best = u[sse.argmin(axis=1)]
    inside = (sse[np.arange(len(r)), i] < sse[np.arange(len(r)), i - 1]) & (
        sse[np.arange(len(r)), i] < sse[np.arange(len(r)), i + 1])  # a bracket: refine; else a grid edge
    if inside.any():
        rows = np.flatnonzero(inside)

        def objective(ux, row):
            return solve(curve(np.exp(-np.exp(ux)[..., None] * elapsed)), r[row.astype(int)])[1]

        res = find_minimum(objective, (u[i[rows] - 1], u[i[rows]], u[i[rows] + 1]), args=(rows.astype(float),))
        best[rows] = np.where(res.success, res.x, best[rows])
    c, sse = solve(curve(np.exp(-np.exp(best)[:, None] * elapsed)), r)
    return np.exp(best), c, sse


@dataclass
class Fit:
    """A fitted drift rate. ``gamma`` per ``time_unit``, ``gamma_ci`` its ``level`` bootstrap interval
    (None without a bootstrap); ``ceiling`` the noise ceiling c (1 when not fitted); ``residual`` the
    root-mean-square difference between the data curve and the model over the lags; ``elapsed``,
    ``curve`` (its ``curve_ci`` from the bootstrap) and ``model`` the data and model at the lags, and
    ``smooth_*`` the model from Δ = 0 on, for figures; ``at_bound``: γ lies at the edge of the searched
    range (the data do not pin it down)."""
    gamma: float
    gamma_ci: Optional[tuple[float, float]]
    ceiling: float
    ceiling_ci: Optional[tuple[float, float]]
    residual: float
    time_unit: str
    elapsed: list[float]
    curve: list[float]
    model: list[float]
    smooth_elapsed: list[float]
    smooth_model: list[float]
    curve_ci: Optional[list[tuple[float, float]]]
    architecture: dict
    level: float
    n_boot: int
    cells: int
    sessions: int
    at_bound: bool
    fit_ceiling: bool

    def to_json(self, path: PathLike) -> Path:
        """Write the fit as JSON (the fields above); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def fit_drift_rate(recording: xr.DataArray, arch: Architecture = Architecture(), *, ceiling: bool = True,
                   n_boot: int = 200, level: float = 0.95, seed: int = 0, active_only: bool = True) -> Fit:
    """Fit γ (and the noise ceiling c) of r(Δ) = c · r∞(e^(−γΔ)) to a recording's PV elapsed-time curve.

    Parameters
    ----------
    recording : xarray.DataArray
        (session, cell, stimulus[, trial]) with session times ``time`` (driftsim.io.load_recording);
        trials are averaged. At least 3 sessions (4 with the ceiling): more lags than parameters.
    arch : Architecture
        The model whose closed form r∞ is fitted.
    ceiling : bool
        Fit the noise ceiling c; False: c = 1 (noise-free responses).
    n_boot : int
        Bootstrap resamples of the cells for the BCa intervals (0: no intervals).
    level : float
        Confidence level of the intervals.
    seed : int
        Seed of the resampling.
    active_only : bool
        As in metrics.pv_correlation: keep only cells active in both sessions of a pair.

    Returns
    -------
    Fit
    """
    r = check_responses(recording)
    means = (r.mean("trial") if "trial" in r.dims else r).values  # [S, C, X]
    S, C = means.shape[:2]
    params = 2 if ceiling else 1
    if S - 1 <= params:
        raise ValueError(f"the recording's elapsed-time curve has {S - 1} point(s) (lags of {S} sessions); fitting "
                         f"γ{' and the noise ceiling' if ceiling else ''} needs more points than parameters "
                         f"({params}): at least {params + 2} sessions")
    t = np.asarray(r["time"].values, dtype=np.float64)
    elapsed = np.array([np.mean(t[k:] - t[:S - k]) for k in range(1, S)])
    curve = model_curve(arch)

    def statistic(cells, axis=-1):
        idx = np.moveaxis(np.asarray(cells, dtype=int), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        weights = np.zeros((len(flat), C))
        np.add.at(weights, (np.repeat(np.arange(len(flat)), flat.shape[1]), flat.ravel()), 1.0)
        gamma, c, _ = _fit_curves(pv_curves(means, weights, active_only), elapsed, curve, ceiling)
        return np.stack([gamma, c]).reshape((2,) + idx.shape[:-1])

    data = pv_curves(means, np.ones((1, C)), active_only)
    gamma, c, sse = (v[0] for v in _fit_curves(data, elapsed, curve, ceiling))
    model = c * curve(np.exp(-gamma * elapsed))
    smooth = np.linspace(0.0, elapsed.max() * 1.05, 101)
    gamma_ci = ceiling_ci = curve_ci = None
    if n_boot > 0:
        boot = bootstrap((np.arange(C),), statistic, n_resamples=n_boot, confidence_level=level, method="BCa",
                         vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = boot.confidence_interval
        gamma_ci, ceiling_ci = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
        resampled = np.random.default_rng(seed).multinomial(C, np.full(C, 1.0 / C), size=n_boot).astype(float)
        q = np.quantile(pv_curves(means, resampled, active_only), [(1 - level) / 2, (1 + level) / 2], axis=0)
        curve_ci = [(float(a), float(b)) for a, b in q.T]
    at_bound = not (_SPAN[0] / elapsed.max() * 1.0001 < gamma < _SPAN[1] / elapsed.min() / 1.0001)
    return Fit(gamma=float(gamma), gamma_ci=gamma_ci, ceiling=float(c), ceiling_ci=ceiling_ci,
               residual=float(np.sqrt(sse / len(elapsed))), time_unit=str(r["time"].attrs.get("units", "unknown")),
               elapsed=elapsed.tolist(), curve=data[0].tolist(), model=model.tolist(), smooth_elapsed=smooth.tolist(),
               smooth_model=(c * curve(np.exp(-gamma * smooth))).tolist(), curve_ci=curve_ci,
               architecture=arch.describe(), level=level, n_boot=int(n_boot), cells=int(C), sessions=int(S),
               at_bound=bool(at_bound), fit_ceiling=ceiling)


def architecture_of(run) -> Architecture:
    """The closed form's settings for a run (a ``store.Run``): its model, σ, observed layer and task inputs
    (training points first, the stimuli of its recordings)."""
    cfg = run.config
    inputs = torch.as_tensor(np.concatenate([run["/task/x_train"], run["/task/x_test"]]), dtype=torch.float64)
    return Architecture(depth=int(cfg["model"]["depth"]), activation=str(cfg["model"]["activation"]),
                        sigma=float(cfg["dynamics"]["sigma"]), layer=(cfg.get("observe") or {}).get("layer"),
                        inputs=inputs)


def rank(recording: xr.DataArray, runs: Union[PathLike, Iterable[PathLike]], *, ceiling: bool = True,
         n_boot: int = 0, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Fit ``recording`` with the architecture of every run (files, or folders searched for ``*.h5``) and
    order the runs by the fit's residual (best first).

    Returns a table with one row per run: ``file``, the config keys that differ between the runs,
    ``residual``, ``gamma`` (per the recording's time unit) and its interval (with ``n_boot`` > 0),
    ``ceiling``, ``gamma_model`` = T/σ² of the run (per model time unit) and ``time_scale`` = gamma /
    gamma_model, the model time units per unit of recorded time that make the run drift like the data.
    """
    from .sweeps import _run_files, flat_config

    files = _run_files(runs)
    loaded = [read_run(f) for f in files]
    flat = [flat_config(r.config) for r in loaded]
    keys = [k for k in sorted(set().union(*flat)) if k not in ("out", "seed") and len({repr(f.get(k)) for f in flat}) > 1]
    rows = []
    for run, cfg in zip(loaded, flat):
        fit = fit_drift_rate(recording, architecture_of(run), ceiling=ceiling, n_boot=n_boot, level=level, seed=seed)
        gamma_model = cfg["dynamics.T"] / cfg["dynamics.sigma"] ** 2
        rows.append({"file": str(run.path), **{k: cfg.get(k) for k in keys}, "residual": fit.residual,
                     "gamma": fit.gamma, "gamma_ci": fit.gamma_ci, "ceiling": fit.ceiling,
                     "gamma_model": gamma_model, "time_scale": fit.gamma / gamma_model, "fit": fit})
    return pd.DataFrame(rows).sort_values("residual", ignore_index=True)
