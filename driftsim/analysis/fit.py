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

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.interpolate import CubicSpline
from scipy.optimize.elementwise import find_minimum
from scipy.stats import bootstrap

from ..io.store import PathLike, read_run
from ..observe import record
from ..prior import Prior
from ..responses import as_responses, check_responses
from ..theory.population import sample_units, stationary_pv_correlation
from .sweeps import flat_config, run_files

__all__ = [
    "CEILINGS",
    "Architecture",
    "Fit",
    "architecture_of",
    "fit_drift_rate",
    "model_curve",
    "pv_curves",
    "rank",
    "split_ceiling",
    "theory_recordings",
]

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
    layer: int | None = None
    inputs: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def describe(self) -> dict:
        return {"depth": self.depth, "activation": self.activation, "sigma": self.sigma, "layer": self.layer,
                "stimuli": "unit norm" if self.inputs is None else int(self.inputs.shape[0])}


@lru_cache(maxsize=64)
def _table(depth: int, activation: str, sigma: float, layer: int | None, norms: tuple) -> CubicSpline:
    """r∞ on _TABLE nodes of s = sqrt(1 − ρ), mean over stimuli with the squared norms |x|²/N0 = ``norms``."""
    s = np.linspace(0.0, 1.0, _TABLE)
    rho = torch.as_tensor(1.0 - s ** 2)
    # a stimulus' PV correlation depends on it only through |x|²/N0 (the same x at both times, SPEC §3.1):
    # one stimulus of that norm at a time, instead of the [ρ, X, X] cross kernel of all of them
    r = np.mean([stationary_pv_correlation(torch.tensor([[np.sqrt(q)]], dtype=torch.float64), depth=depth,
                                           activation=activation, sigma=sigma, rho=rho, layer=layer).numpy()
                 for q in norms], axis=0)
    return CubicSpline(s, r)


def model_curve(arch: Architecture):
    """r∞(ρ) of ``arch`` for ρ ∈ [0, 1] (float64 numpy in and out): the closed form tabulated in
    s = sqrt(1 − ρ) and interpolated by a cubic spline (error below 1e-9 for relu, tested)."""
    x = np.ones((1, 1)) if arch.inputs is None else np.asarray(torch.as_tensor(arch.inputs, dtype=torch.float64))
    norms = tuple(float(q) for q in (x * x).sum(axis=1) / x.shape[1])
    table = _table(int(arch.depth), str(arch.activation), float(arch.sigma), arch.layer, norms)
    return lambda p: table(np.sqrt(np.clip(1.0 - np.asarray(p, dtype=np.float64), 0.0, 1.0)))


def _weighted_pv(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """corr over cells of a [C, X] and b [C, X], cell c counted weights[:, c] times, mean over stimuli: [B]."""
    n = weights.sum(axis=1, keepdims=True)
    ma, mb = weights @ a / n, weights @ b / n
    cov = weights @ (a * b) / n - ma * mb
    var_a, var_b = weights @ (a * a) / n - ma ** 2, weights @ (b * b) / n - mb ** 2
    return (cov / np.sqrt(var_a * var_b)).mean(axis=1)


def _active(values: np.ndarray, active_only: bool) -> np.ndarray:
    """[S, C]: the cells kept in each session (mean response over stimuli > 0, as metrics.pv_correlation)."""
    return values.mean(axis=2) > 0 if active_only else np.ones(values.shape[:2], bool)


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
    active = _active(values, active_only)
    pairs = np.zeros((weights.shape[0], S, S))
    for i in range(S):
        for j in range(i + 1, S):
            pairs[:, i, j] = _weighted_pv(v[i], v[j], weights * (active[i] & active[j]))
    return np.stack([np.diagonal(pairs, offset=k, axis1=1, axis2=2).mean(axis=1) for k in range(1, S)], axis=1)


def split_ceiling(values: np.ndarray, weights: np.ndarray, active_only: bool = True) -> np.ndarray:
    """The noise ceiling from within-session reliability, for weighted populations.

    Per session, the PV correlation between the averages of the even and the odd trials (numbered from
    1, as metrics' split halves) r_half, stepped up to the whole session by Spearman–Brown, 2 r_half /
    (1 + r_half): the factor by which trial noise, independent between sessions, scales every
    between-session correlation of the trial averages. Mean over sessions.

    Parameters
    ----------
    values : ndarray [S, C, X, R]
        Responses, R ≥ 2 trials.
    weights : ndarray [B, C]
        Multiplicities of the cells.
    active_only : bool
        Keep only cells with a positive mean response in the session.

    Returns
    -------
    ndarray [B]
    """
    even, odd = values[..., 1::2].mean(-1), values[..., 0::2].mean(-1)
    centre = values.mean(axis=(1, 3))[:, None, :]
    active = _active(values.mean(-1), active_only)
    half = np.stack([_weighted_pv(even[s] - centre[s], odd[s] - centre[s], weights * active[s])
                     for s in range(values.shape[0])], axis=1)  # [B, S]
    return (2 * half / (1 + half)).mean(axis=1)


def _fit_curves(r: np.ndarray, elapsed: np.ndarray, curve, ceiling: np.ndarray | None):
    """Least squares of r [B, K] on c·curve(e^(−γ·elapsed)), c fitted (``ceiling`` None) or given [B]:
    γ [B], c [B], residual sum of squares [B]."""
    u = np.linspace(np.log(_SPAN[0] / elapsed.max()), np.log(_SPAN[1] / elapsed.min()), _GRID)

    def solve(m, data, rows):  # c and the sum of squares for model curves m [..., K], data [..., K]
        if ceiling is None:
            norm = (m * m).sum(-1)
            c = (m * data).sum(-1) / np.where(norm > 0, norm, 1.0)
        else:
            c = ceiling[rows]
        return c, ((data - c[..., None] * m) ** 2).sum(-1)

    B = len(r)
    every = np.arange(B)
    m = curve(np.exp(-np.exp(u)[:, None] * elapsed))  # [G, K]
    sse = solve(m[None], r[:, None, :], (every[:, None]))[1]  # [B, G]
    i = np.clip(sse.argmin(axis=1), 1, _GRID - 2)
    best = u[sse.argmin(axis=1)]
    inside = (sse[every, i] < sse[every, i - 1]) & (sse[every, i] < sse[every, i + 1])  # bracketed: refine
    if inside.any():
        rows = np.flatnonzero(inside)

        def objective(ux, row):
            row = row.astype(int)
            return solve(curve(np.exp(-np.exp(ux)[..., None] * elapsed)), r[row], row)[1]

        res = find_minimum(objective, (u[i[rows] - 1], u[i[rows]], u[i[rows] + 1]), args=(rows.astype(float),))
        best[rows] = np.where(res.success, res.x, best[rows])
    c, sse = solve(curve(np.exp(-np.exp(best)[:, None] * elapsed)), r, every)
    return np.exp(best), c, sse


@dataclass
class Fit:
    """A fitted drift rate. ``gamma`` per ``time_unit``, ``gamma_ci`` its ``level`` bootstrap interval
    (None without a bootstrap); ``ceiling`` the noise ceiling c (``ceiling_method``: split, fit or
    none, then 1) and ``ceiling_ci`` its interval; ``residual`` the
    root-mean-square difference between the data curve and the model over the lags; ``elapsed``,
    ``curve`` (its ``curve_ci`` from the bootstrap) and ``model`` the data and model at the lags, and
    ``smooth_*`` the model from Δ = 0 on, for figures; ``at_bound``: γ lies at the edge of the searched
    range (the data do not pin it down)."""
    gamma: float
    gamma_ci: tuple[float, float] | None
    ceiling: float
    ceiling_ci: tuple[float, float] | None
    residual: float
    time_unit: str
    elapsed: list[float]
    curve: list[float]
    model: list[float]
    smooth_elapsed: list[float]
    smooth_model: list[float]
    curve_ci: list[tuple[float, float]] | None
    architecture: dict
    level: float
    n_boot: int
    cells: int
    sessions: int
    at_bound: bool
    ceiling_method: str



CEILINGS = ("split", "fit", "none")


def _weights(cells: np.ndarray, C: int) -> np.ndarray:
    """[B, C] multiplicities of resampled cell indices [..., n] (the batch flattened)."""
    flat = cells.reshape(-1, cells.shape[-1])
    weights = np.zeros((len(flat), C))
    np.add.at(weights, (np.repeat(np.arange(len(flat)), flat.shape[1]), flat.ravel()), 1.0)
    return weights


def _shown(arch: Architecture, r: xr.DataArray) -> Architecture:
    """``arch`` with only the stimuli the recording shows, when its stimulus ids index arch.inputs (a
    run's recordings: ids 0..X−1 into its inputs, training points first)."""
    ids = r["stimulus"].values if "stimulus" in r.coords else None
    if arch.inputs is None or ids is None or not np.issubdtype(ids.dtype, np.integer):
        return arch
    if ids.min() < 0 or ids.max() >= len(arch.inputs):
        return arch
    return replace(arch, inputs=torch.as_tensor(arch.inputs)[torch.from_numpy(ids.astype(np.int64))])


def fit_drift_rate(recording: xr.DataArray, arch: Architecture = Architecture(), *, ceiling: str = "split",
                   n_boot: int = 200, level: float = 0.95, seed: int = 0, active_only: bool = True) -> Fit:
    """Fit γ (and the noise ceiling c) of r(Δ) = c · r∞(e^(−γΔ)) to a recording's PV elapsed-time curve.

    Parameters
    ----------
    recording : xarray.DataArray
        (session, cell, stimulus[, trial]) with session times ``time`` (driftsim.io.load_recording);
        trials are averaged. More lags (sessions − 1) than fitted parameters.
    arch : Architecture
        The model whose closed form r∞ is fitted; where the recording's stimulus ids index its inputs,
        only those stimuli enter.
    ceiling : {"split", "fit", "none"}
        The noise ceiling c: measured from the trials (:func:`split_ceiling`; needs ≥ 2 trials), fitted
        with γ (a second parameter: the curve's shape alone must then tell c from the architecture), or
        c = 1 (noise-free responses).
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
    if ceiling not in CEILINGS:
        raise ValueError(f"ceiling={ceiling!r} is not allowed; choose one of {list(CEILINGS)}")
    r = check_responses(recording, trials_for="the split-half noise ceiling" if ceiling == "split" else None)
    values = r.values if "trial" in r.dims else r.values[..., None]  # [S, C, X, R]
    means = values.mean(-1)
    S, C = means.shape[:2]
    params = 2 if ceiling == "fit" else 1
    if S - 1 <= params:
        raise ValueError(f"the recording's elapsed-time curve has {S - 1} point(s) (lags of {S} sessions); fitting "
                         f"γ{' and the noise ceiling' if ceiling == 'fit' else ''} needs more points than "
                         f"parameters ({params}): at least {params + 2} sessions")
    t = np.asarray(r["time"].values, dtype=np.float64)
    elapsed = np.array([np.mean(t[k:] - t[:S - k]) for k in range(1, S)])
    curve = model_curve(_shown(arch, r))

    def fitted(weights):
        c = {"split": lambda: split_ceiling(values, weights, active_only), "fit": lambda: None,
             "none": lambda: np.ones(len(weights))}[ceiling]()
        return _fit_curves(pv_curves(means, weights, active_only), elapsed, curve, c)

    def statistic(cells, axis=-1):  # scipy.stats.bootstrap's vectorised call: resampled cell indices
        idx = np.moveaxis(np.asarray(cells, dtype=int), axis, -1)
        gamma, c, _ = fitted(_weights(idx, C))
        return np.stack([gamma, c]).reshape((2,) + idx.shape[:-1])

    ones = np.ones((1, C))
    data = pv_curves(means, ones, active_only)
    gamma, c, sse = (v[0] for v in fitted(ones))
    smooth = np.linspace(0.0, elapsed.max() * 1.05, 101)
    gamma_ci = ceiling_ci = curve_ci = None
    if n_boot > 0:
        boot = bootstrap((np.arange(C),), statistic, n_resamples=n_boot, confidence_level=level, method="BCa",
                         vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = boot.confidence_interval
        gamma_ci = (float(lo[0]), float(hi[0]))
        ceiling_ci = None if ceiling == "none" else (float(lo[1]), float(hi[1]))
        resampled = np.random.default_rng(seed).multinomial(C, np.full(C, 1.0 / C), size=n_boot).astype(float)
        q = np.quantile(pv_curves(means, resampled, active_only), [(1 - level) / 2, (1 + level) / 2], axis=0)
        curve_ci = [(float(a), float(b)) for a, b in q.T]
    at_bound = not (_SPAN[0] / elapsed.max() * 1.0001 < gamma < _SPAN[1] / elapsed.min() / 1.0001)
    return Fit(gamma=float(gamma), gamma_ci=gamma_ci, ceiling=float(c), ceiling_ci=ceiling_ci,
               residual=float(np.sqrt(sse / len(elapsed))), time_unit=str(r["time"].attrs.get("units", "unknown")),
               elapsed=elapsed.tolist(), curve=data[0].tolist(), model=(c * curve(np.exp(-gamma * elapsed))).tolist(),
               smooth_elapsed=smooth.tolist(), smooth_model=(c * curve(np.exp(-gamma * smooth))).tolist(),
               curve_ci=curve_ci, architecture=arch.describe(), level=level, n_boot=int(n_boot), cells=int(C),
               sessions=int(S), at_bound=bool(at_bound), ceiling_method=ceiling)


def architecture_of(run) -> Architecture:
    """The closed form's settings for a run (a ``store.Run``): its model, σ, observed layer and task inputs
    (training points first, the stimuli of its recordings)."""
    cfg = run.config
    inputs = torch.as_tensor(np.concatenate([run["/task/x_train"], run["/task/x_test"]]), dtype=torch.float64)
    return Architecture(depth=int(cfg["model"]["depth"]), activation=str(cfg["model"]["activation"]),
                        sigma=float(cfg["dynamics"]["sigma"]), layer=(cfg.get("observe") or {}).get("layer"),
                        inputs=inputs)


def rank(recording: xr.DataArray, runs: PathLike | Iterable[PathLike], *, ceiling: str = "split",
         n_boot: int = 0, level: float = 0.95, seed: int = 0, active_only: bool = True) -> pd.DataFrame:
    """Fit ``recording`` with the architecture of every run (files, or folders searched for ``*.h5``) and
    order the runs by the fit's residual (best first).

    Returns a table with one row per run: ``file``, the config keys that differ between the runs,
    ``residual``, ``gamma`` (per the recording's time unit) and its interval (with ``n_boot`` > 0),
    ``ceiling``, ``gamma_model`` = T/σ² of the run (per model time unit) and ``time_scale`` = gamma /
    gamma_model, the model time units per unit of recorded time that make the run drift like the data.
    """
    files = run_files(runs)
    loaded = [read_run(f) for f in files]
    flat = [flat_config(r.config) for r in loaded]
    keys = [k for k in sorted(set().union(*flat)) if k not in ("out", "seed") and len({repr(f.get(k)) for f in flat}) > 1]
    rows = []
    for run, cfg in zip(loaded, flat):
        fit = fit_drift_rate(recording, architecture_of(run), ceiling=ceiling, n_boot=n_boot, level=level, seed=seed,
                             active_only=active_only)
        gamma_model = cfg["dynamics.T"] / cfg["dynamics.sigma"] ** 2
        rows.append({"file": str(run.path), **{k: cfg.get(k) for k in keys}, "residual": fit.residual,
                     "gamma": fit.gamma, "gamma_ci": fit.gamma_ci, "ceiling": fit.ceiling,
                     "gamma_model": gamma_model, "time_scale": fit.gamma / gamma_model, "fit": fit})
    return pd.DataFrame(rows).sort_values("residual", ignore_index=True)


def theory_recordings(arch: Architecture, gamma: float, times, *, animals: int = 1, cells: int = 200,
                      trials: int = 4, noise: str = "poisson", gain: float = 5.0, baseline: float = 0.5,
                      seed: int = 0) -> list[xr.DataArray]:
    """Recordings of the model itself at a known drift rate, one per independent animal: what
    :func:`fit_drift_rate` assumes, for recovery studies and power analyses.

    Units are drawn from the infinite-width Gaussian process at weight equilibrium (σ0 = σ, so the
    prior is stationary: C(t,t') = σ² e^(−γ|t−t'|), SPEC §2; theory.population.sample_units), all
    animals' units in one draw, and recorded by the observation model (driftsim.observe.record: rate
    gain·φ + baseline, trial noise).

    Parameters
    ----------
    arch : Architecture
        Depth, φ, σ, layer and stimuli [X, N0] (required here: the units respond to them).
    gamma : float
        Drift rate per unit of ``times``.
    times : array_like [S]
        Session times.
    animals : int
        Independent recordings A.
    cells, trials, noise, gain, baseline
        The observation (driftsim.observe.record), per animal.
    seed : int
        Seed of the units and of the observation.

    Returns
    -------
    list of A xarray.DataArray
        (session, cell, stimulus, trial) with coordinate ``time`` = ``times``.
    """
    if arch.inputs is None:
        raise ValueError("theory_recordings needs the stimuli: Architecture(inputs=[X, N0] tensor)")
    x = torch.as_tensor(arch.inputs, dtype=torch.float64)
    t = torch.as_tensor(np.asarray(times, dtype=np.float64))
    units = sample_units(x, depth=arch.depth, activation=arch.activation,
                         prior=Prior(gamma * arch.sigma ** 2, arch.sigma, arch.sigma), times=t, cells=animals * cells,
                         seed=seed, layer=arch.layer)  # [S, A·C, X]
    rec = record(units.reshape(len(t), animals, cells, len(x)), cells=cells, trials=trials, noise=noise, gain=gain,
                 baseline=baseline, seed=np.random.SeedSequence([seed, 1]))
    return [as_responses(rec.responses[:, a], time=t.numpy()) for a in range(animals)]
