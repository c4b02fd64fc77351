"""Figures of one driftsim run (SPEC §5, §6, §9).

Every figure function takes a :class:`driftsim.io.store.Run` (a file read by ``read_run``) and returns a
matplotlib Figure; those drawing one panel accept ``ax`` (draw into an existing axes, e.g. to overlay
several runs), ``label`` and ``color``. Times are in the units of SPEC §1.4 (Langevin time; the weights
relax at rate γ = T/σ²), predictor values in label units (y = ±1). Time axes are logarithmic, so the
t = 0 entry of every recorded series is left out. Colours: seaborn's colour-blind-safe palette.

- :func:`predictor_trajectories`: mean predictor over learning (SPEC §5.1), NTK theory (§5.2, dashed),
  NTK and NNGP equilibria (§5.3) as horizontal marks, simulated ensemble mean ± 2 standard errors (§8).
- :func:`generalisation_error`: test error of the mean predictor over time, best early-stopping point marked
  (§9 finding 3).
- :func:`predictor_histograms`: per-class histograms of the predictor at chosen times of a phase, theory
  (mean predictor per example) and simulation (every network) side by side, optionally with a predicted
  Gaussian density per example overlaid (SPEC §10).
- :func:`drift_accuracy`: decoding accuracy after the freeze with the decorrelated limit (§6.4, §9 finding 5).
- Recordings (``observe.sessions`` > 0; ``metrics.py``, ``theory/population.py``), over the sessions' drift
  times (linear axes): :func:`pv_elapsed` (PV or ensemble-rate correlation against elapsed time: the
  infinite-population closed form, simulated networks, theory-sampled networks), :func:`similarity_matrices`
  (first and last session side by side) and :func:`decoder_accuracy` (fixed vs retrained decoders).

The numbers the figures mark come from ``measures.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from ..io import store
from . import metrics
from .measures import prediction_error, best_stopping

__all__ = ["PALETTE", "TIME_LABEL", "DRIFT_TIME_LABEL", "palette", "predictor_trajectories",
           "generalisation_error", "predictor_histograms", "drift_accuracy", "pv_elapsed", "similarity_matrices",
           "decoder_accuracy", "standard_figures", "save_figures", "figures_dir"]

PALETTE = "colorblind"
TIME_LABEL = "time t  [Langevin time, SPEC §1.4]"
DRIFT_TIME_LABEL = "time since the freeze t − t0  [Langevin time]"
PREDICTOR_LABEL = "predictor f(x)  [label units, y = ±1]"


def palette(n: int) -> list:
    """n colours of the colour-blind-safe palette (cycled beyond its 10)."""
    return sns.color_palette(PALETTE, n)


# ---------------------------------------------------------------------------------------------- figures

def _axes(ax, figsize=(6.4, 4.2)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _gamma(run: store.Run) -> float:
    d = run.config["dynamics"]
    return d["T"] / d["sigma"] ** 2


def _legend(ax) -> None:
    """Legend with each label once (overlaid runs repeat the shared entries such as "NTK theory")."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)


def _log_time(ax, label: str = TIME_LABEL) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(label)


def _mark_relaxation(ax, run: store.Run) -> None:
    """Vertical mark at 1/γ = σ²/T, where the diffusive phase (SPEC §5.3) takes over."""
    ax.axvline(1.0 / _gamma(run), color="0.6", lw=0.8, ls=":", zorder=0)
    ax.annotate("1/γ", (1.0 / _gamma(run), 1.0), xycoords=("data", "axes fraction"), xytext=(2, -12),
                textcoords="offset points", color="0.4", fontsize=8)


def _later(t: np.ndarray, *arrays):
    """The entries at t > 0 (log time axes)."""
    keep = np.asarray(t) > 0
    return (np.asarray(t)[keep],) + tuple(np.asarray(a)[keep] for a in arrays)


def _mean_band(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean over axis 1 of f [n, E, ...] and its 2-standard-error half width."""
    E = f.shape[1]
    se = f.std(axis=1, ddof=1) / np.sqrt(E) if E > 1 else np.zeros_like(f[:, 0])
    return f.mean(axis=1), 2 * se


# ---------------------------------------------------------------------------------------------- figures

def predictor_trajectories(run: store.Run, split: str = "test", points: Optional[Sequence[int]] = None,
                           ax=None, label: Optional[str] = None, color=None) -> Figure:
    """Predictor on ``split`` points over the learning run (SPEC §5): theory mean (solid), NTK theory (§5.2,
    dashed), NTK equilibrium (short dashes at the right) and NNGP equilibrium (dotted line), simulated
    ensemble mean with a ±2 SE band when the run has a simulation. ``points``: indices (default the
    first 3). One colour per point, or ``color`` when a single point is drawn (overlaying runs)."""
    fig, ax = _axes(ax)
    f_theory = run[f"/theory/learn/f_{split}"] if "theory" in run.sources else None
    n_points = (f_theory if f_theory is not None else run[f"/sim/learn/f_{split}"]).shape[-1]
    points = list(range(min(3, n_points))) if points is None else list(points)
    colors = [color] * len(points) if color is not None else palette(len(points))
    for i, c in zip(points, colors):
        name = label if label is not None else f"{split} point {i}"
        if f_theory is not None:
            t, f, f_ntk = _later(run["/theory/learn/t"], f_theory[:, i], run[f"/theory/learn/f_ntk_{split}"][:, i])
            ax.plot(t, f, color=c, lw=2, label=f"{name}: theory mean")
            ax.plot(t, f_ntk, color=c, lw=1.2, ls="--")
            ax.axhline(run[f"/theory/nngp/f_{split}"][i], color=c, lw=1, ls=":")
            ax.plot([t[-1]], [run[f"/theory/ntk/f_{split}"][i]], marker="_", ms=14, mew=2, color=c)
        if "sim" in run.sources:
            mean, band = _mean_band(run[f"/sim/learn/f_{split}"][..., i])
            t, mean, band = _later(run["/sim/learn/t"], mean, band)
            ax.plot(t, mean, color=c, lw=0, marker="o", ms=3.5, label=f"{name}: simulation mean ± 2 SE")
            ax.fill_between(t, mean - band, mean + band, color=c, alpha=0.25, lw=0)
    if f_theory is not None:  # the line styles once, in grey: they mean the same for every point and run
        ax.plot([], [], color="0.4", lw=1.2, ls="--", label="NTK theory")
        ax.plot([], [], color="0.4", lw=1, ls=":", label="NNGP equilibrium")
        ax.plot([], [], color="0.4", lw=0, marker="_", ms=14, mew=2, label="NTK equilibrium")
    _mark_relaxation(ax, run)
    _log_time(ax)
    ax.set_ylabel(PREDICTOR_LABEL)
    _legend(ax)
    return fig


def generalisation_error(run: store.Run, metric: str = "mse", ax=None, label: Optional[str] = None,
                         color=None) -> Figure:
    """Test error of the theory's mean predictor over the learning run (``metric``: 'mse' or '01'), NTK
    theory dashed, simulated ensemble mean's error as dots when present, and the best early-stopping
    point t* marked (SPEC §9 finding 3)."""
    fig, ax = _axes(ax)
    color = color if color is not None else palette(1)[0]
    y = run["/task/y_test"]
    name = label if label is not None else "theory mean"
    t_all = run["/theory/learn/t"]
    err = prediction_error(run["/theory/learn/f_test"], y, metric)
    t, e, e_ntk = _later(t_all, err, prediction_error(run["/theory/learn/f_ntk_test"], y, metric))
    ax.plot(t, e, color=color, lw=2, label=name)
    ax.plot(t, e_ntk, color=color, lw=1.2, ls="--", label=f"{name}: NTK theory" if label else "NTK theory")
    if "sim" in run.sources:
        ts, es = _later(run["/sim/learn/t"], prediction_error(run["/sim/learn/f_test"].mean(axis=1), y, metric))
        ax.plot(ts, es, color=color, lw=0, marker="o", ms=3.5, label=f"{name}: simulation mean")
    t_best, e_best = best_stopping(t, e)
    ax.plot([t_best], [e_best], marker="*", ms=13, color=color, mec="k", lw=0,
            label=f"best stopping t* = {t_best:.3g}")
    _mark_relaxation(ax, run)
    _log_time(ax)
    ax.set_ylabel("test MSE of the mean predictor" if metric == "mse" else "test 0–1 error of the mean predictor")
    _legend(ax)
    return fig


def _nearest(t: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of the recorded time nearest each wanted time (in log(1 + t): t = 0 stays reachable)."""
    return np.array([int(np.argmin(np.abs(np.log1p(t) - np.log1p(w)))) for w in wanted])


def predictor_histograms(run: store.Run, phase: str = "drift", times: Optional[Sequence[float]] = None,
                         split: str = "train", bins: int = 30, means: Optional[np.ndarray] = None,
                         variances: Optional[np.ndarray] = None) -> Figure:
    """Per-class histograms of the predictor at chosen times of ``phase`` (SPEC §6, §9 finding 5): one
    column per time (the recorded times nearest ``times``; default 4 spread over the phase), one row per
    source — theory (the mean predictor of each example) and simulation (every network on every example).

    ``means`` and ``variances``: optional per-example Gaussian predictions of the ensemble's predictor
    (SPEC §10), [len(times), P] for the chosen times or [n, P] for every recorded time of the phase;
    their class-wise mixture density is drawn over the histograms (over the simulation row when there is one).
    """
    if phase not in run.phases:
        raise ValueError(f"phase={phase!r} is not in this run: it has {list(run.phases)}")
    sources = [s for s in ("theory", "sim") if s in run.sources]
    t = run[f"/{sources[0]}/{phase}/t"]
    # default: the start, one and five relaxation times 1/γ (where drift reshapes the code), the end
    wanted = np.array([0.0, 1.0, 5.0]) / _gamma(run) if times is None else np.asarray(times, dtype=float)
    idx = _nearest(t, np.append(wanted, t[-1]) if times is None else wanted)
    if (means is None) != (variances is None):
        raise ValueError("means and variances go together: give both or neither")
    y = run[f"/task/y_{split}"]
    if means is not None:
        means, variances = np.asarray(means), np.asarray(variances)
        if means.shape != variances.shape or means.shape not in ((len(idx), len(y)), (len(t), len(y))):
            raise ValueError(f"means and variances must both have shape [{len(idx)} chosen times or {len(t)} "
                             f"recorded times, {len(y)}]; got {means.shape} and {variances.shape}")
        if means.shape[0] != len(idx):  # one row per recorded time: pick the chosen ones
            means, variances = means[idx], variances[idx]
    colors = dict(zip((1.0, -1.0), palette(2)))
    fig, axes = plt.subplots(len(sources), len(idx), figsize=(3.2 * len(idx), 2.8 * len(sources)),
                             layout="constrained", squeeze=False)
    xlabel = "t − t0" if phase == "drift" else "t"
    for r, source in enumerate(sources):
        f = run[f"/{source}/{phase}/f_{split}"]
        for c, i in enumerate(idx):
            ax = axes[r, c]
            vals = f[i] if source == "theory" else f[i].reshape(-1, f.shape[-1])  # [P] or [E, P]
            labels = np.broadcast_to(y, vals.shape).ravel()
            df = pd.DataFrame({"f": vals.ravel(), "class": np.where(labels > 0, "y = +1", "y = −1")})
            sns.histplot(df, x="f", hue="class", hue_order=["y = +1", "y = −1"], bins=bins, stat="density",
                         common_norm=False, element="step", palette=[colors[1.0], colors[-1.0]], ax=ax,
                         legend=(r == 0 and c == 0))
            if means is not None and (source == "sim" or len(sources) == 1):
                lo, hi = ax.get_xlim()
                grid = np.linspace(lo, hi, 200)
                for cls, col in colors.items():
                    m, v = means[c][y == cls], np.maximum(variances[c][y == cls], 1e-300)
                    dens = np.exp(-(grid[:, None] - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v)
                    ax.plot(grid, dens.mean(axis=1), color=col, lw=1.5,
                            label="predicted density" if cls > 0 else None)
                ax.legend(fontsize=7)
            ax.set_title(f"{source}, {xlabel} = {t[i]:.3g}", fontsize=9)
            ax.set_xlabel(f"f(x) on {split} examples  [label units]")
            ax.set_ylabel("density" if c == 0 else "")
    return fig


def drift_accuracy(run: store.Run, ax=None, label: Optional[str] = None, color=None) -> Figure:
    """Decoding accuracy over the drift phase (driftsim.decode; SPEC §6, §9 finding 5): the theory's mean
    predictor (solid) with its decorrelated limit (§6.4, horizontal line), the simulated networks'
    single-network and population readers and, when recorded, hidden-layer decoders fixed at the freeze
    or retrained; chance (0.5) in grey."""
    if "drift" not in run.phases:
        raise ValueError(f"{run.path} has no drift phase (protocol.t0 unset): nothing to plot")
    fig, ax = _axes(ax)
    name = f"{label}: " if label else ""
    series = [("theory", "accuracy", "-", "theory mean predictor"),
              ("sim", "accuracy", "--", "one network's predictor"),
              ("sim", "accuracy_population", "-.", "ensemble of predictors"),
              ("sim", "population_fixed", ":", "hidden layer, decoder fixed at t0"),
              ("sim", "population_retrained", (0, (1, 3)), "hidden layer, decoder retrained")]
    present = [s for s in series if f"/decode/{s[0]}/drift/{s[1]}" in run]
    colors = [color] * len(present) if color is not None else palette(len(present))
    for (source, key, ls, what), c in zip(present, colors):
        t, acc = _later(run[f"/{source}/drift/t"], run[f"/decode/{source}/drift/{key}"])
        ax.plot(t, acc, color=c, ls=ls, lw=2, marker="o", ms=3, label=name + what)
        if key == "accuracy" and source == "theory" and "/decode/theory/drift/accuracy_inf" in run:
            ax.axhline(float(run["/decode/theory/drift/accuracy_inf"]), color=c, lw=1.2, ls=(0, (5, 2, 1, 2)),
                       label=name + "decorrelated limit (§6.4)")
    ax.axhline(0.5, color="0.5", lw=1, ls=":", label="chance")
    _log_time(ax, DRIFT_TIME_LABEL)
    ax.set_ylabel("decoding accuracy (cross-validated)")
    ax.set_ylim(min(0.4, ax.dataLim.y0 - 0.05), 1.02)  # chance and above, unless a reader falls below
    _legend(ax)
    return fig


def _observed_sources(run: store.Run) -> list[str]:
    sources = [s for s in ("theory", "sim") if f"/metrics/{s}/pv_correlation" in run]
    if not sources:
        raise ValueError(f"{run.path} has no recordings (observe.sessions=0): nothing to plot")
    return sources


def _elapsed(matrix: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(elapsed time [S], r(Δ) [..., S]): means of the Δ-th off-diagonals of [..., S, S] (metrics.elapsed_curve)."""
    lead = [f"dim_{i}" for i in range(matrix.ndim - 2)]
    curve = metrics.elapsed_curve(xr.DataArray(matrix, dims=(*lead, "session", "session_other"),
                                               coords={"time": ("session", t)}))
    return curve.coords["elapsed"].values, curve.values


def pv_elapsed(run: store.Run, metric: str = "pv_correlation", ax=None, label: Optional[str] = None,
               color=None) -> Figure:
    """PV (or ``metric="rate_correlation"``) correlation against the time elapsed between sessions, r(Δ) of
    Deitch et al. (``metrics.elapsed_curve``): the infinite-population closed form (line; no trial noise),
    the simulated networks' recordings (points, mean ± 1 SE over networks) and the recordings of networks
    sampled from the theory's Gaussian process (band, mean ± 1 SD over them: where one animal may lie)."""
    sources = _observed_sources(run)
    fig, ax = _axes(ax)
    name = f"{label}: " if label else ""
    colors = [color] * 3 if color is not None else palette(3)
    what = "PV correlation" if metric == "pv_correlation" else metric.replace("_", " ")
    if f"/theory/drift/population/{metric}" in run:
        t = run["/theory/drift/population/t"]
        elapsed, r = _elapsed(run[f"/theory/drift/population/{metric}"], t)
        ax.plot(elapsed, r, color=colors[0], lw=2, label=name + "theory, infinite population")
    if "theory" in sources:
        elapsed, r = _elapsed(run[f"/metrics/theory/{metric}"], run["/observe/theory/t"])
        mean, sd = r.mean(0), r.std(0, ddof=1) if len(r) > 1 else np.zeros(r.shape[1])
        ax.fill_between(elapsed, mean - sd, mean + sd, color=colors[1], alpha=0.3, lw=0,
                        label=name + f"theory-sampled recordings (±1 SD, {len(r)} networks)")
    if "sim" in sources:
        elapsed, r = _elapsed(run[f"/metrics/sim/{metric}"], run["/observe/sim/t"])
        se = r.std(0, ddof=1) / np.sqrt(len(r)) if len(r) > 1 else np.zeros(r.shape[1])
        ax.errorbar(elapsed, r.mean(0), yerr=se, color=colors[2], lw=0, elinewidth=1.5, marker="o", ms=4,
                    capsize=3, label=name + f"simulated recordings (±1 SE, {len(r)} networks)")
    ax.axhline(0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("time elapsed between sessions  [Langevin time]")
    ax.set_ylabel(f"{what} (mean over session pairs)")
    _legend(ax)
    return fig


def _upper_corr(a: np.ndarray, b: np.ndarray) -> float:
    i, j = np.triu_indices(a.shape[-1], k=1)
    return float(np.corrcoef(a[i, j], b[i, j])[0, 1])


def similarity_matrices(run: store.Run, network: int = 0) -> Figure:
    """Stimulus × stimulus similarity (correlation over cells of the population vectors) in the first and the
    last session, side by side: one row per source — the infinite population (closed form), and the
    recordings of ``network`` among the simulated and the theory-sampled ones. Each row's title gives the
    correlation of the two matrices' upper triangles (the internal-structure stability, un-normalised)."""
    sources = _observed_sources(run)
    rows = []
    if "/theory/drift/population/similarity" in run:
        rows.append(("theory, infinite population", run["/theory/drift/population/similarity"],
                     run["/theory/drift/population/t"]))
    for source, what in (("sim", "simulated"), ("theory", "theory-sampled")):
        if source in sources:
            rows.append((f"{what} network {network}", run[f"/metrics/{source}/similarity"][network],
                         run[f"/observe/{source}/t"]))
    low = min(float(m[[0, -1]].min()) for _, m, _ in rows)
    fig, axes = plt.subplots(len(rows), 2, figsize=(7.2, 3.3 * len(rows)), layout="constrained", squeeze=False)
    for (what, m, t), row in zip(rows, axes):
        for ax, s in zip(row, (0, -1)):
            image = ax.imshow(m[s], vmin=low, vmax=1.0, cmap="viridis", interpolation="nearest")
            ax.set_title(f"{what}\nt − t0 = {t[s]:.3g}", fontsize=9)
            ax.set_xlabel("stimulus (training first)")
            ax.set_ylabel("stimulus")
        row[1].text(1.02, 0.5, f"stability {_upper_corr(m[0], m[-1]):.3f}", transform=row[1].transAxes,
                    rotation=90, va="center", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="correlation over cells")
    return fig


def decoder_accuracy(run: store.Run, ax=None) -> Figure:
    """Population decoders over the sessions (metrics.decoders; theory/population.fixed_decoder): fitted on
    session 0 and kept (fixed, solid) against retrained at each session (dashed), mean ± 1 SE over networks,
    for the simulated and theory-sampled recordings; the infinite population's fixed ridge decoder (black)
    with its decorrelated limit (SPEC §6.4, dash-dotted); chance in grey."""
    sources = _observed_sources(run)
    fig, ax = _axes(ax)
    colors = dict(zip(("sim", "theory"), palette(3)[1:][::-1]))
    for source in sources:
        t = run[f"/observe/{source}/t"]
        what = "simulated" if source == "sim" else "theory-sampled"
        for key, ls, kind in (("decoder_fixed", "-", "fixed"), ("decoder_retrained", "--", "retrained")):
            a = run[f"/metrics/{source}/{key}"]
            se = a.std(0, ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.zeros(a.shape[1])
            ax.errorbar(t, a.mean(0), yerr=se, color=colors[source], ls=ls, lw=1.8, marker="o", ms=3, capsize=2,
                        label=f"{what}: {kind} (logistic, recordings)")
        if f"/metrics/{source}/decoder_ridge_fixed" in run:
            ax.plot(t, run[f"/metrics/{source}/decoder_ridge_fixed"].mean(0), color=colors[source], ls=":", lw=1.5,
                    marker="s", ms=3, label=f"{what}: fixed ridge, noise-free cells")
    if "/theory/drift/population/decoder_fixed" in run:
        t = run["/theory/drift/population/t"]
        ax.plot(t, run["/theory/drift/population/decoder_fixed"], color="k", lw=2,
                label="theory: fixed ridge, infinite population")
        ax.axhline(float(run["/theory/drift/population/decoder_fixed_inf"]), color="k", lw=1.2, ls="-.",
                   label="its decorrelated limit (§6.4)")
    ax.axhline(0.5, color="0.5", lw=1, ls=":", label="chance")
    ax.set_xlabel(DRIFT_TIME_LABEL.replace("time since", "session: time since"))
    ax.set_ylabel("decoding accuracy")
    ax.set_ylim(min(0.4, ax.dataLim.y0 - 0.05), 1.02)
    _legend(ax)
    return fig


def standard_figures(run: store.Run) -> dict[str, Figure]:
    """The figures ``driftsim-plot`` writes for one run, by name: trajectories and error (when the run has
    theory), histograms of the last phase and drift accuracy (when it has a drift phase), and with
    recordings (observe.sessions > 0) PV correlation against elapsed time, similarity matrices and the
    population decoders."""
    figs = {"trajectories": predictor_trajectories(run)}
    if "theory" in run.sources:
        figs["error"] = generalisation_error(run)
    figs["histograms"] = predictor_histograms(run, phase=run.phases[-1])
    if "drift" in run.phases:
        figs["drift_accuracy"] = drift_accuracy(run)
    if any(f"/metrics/{s}/pv_correlation" in run for s in ("theory", "sim")):
        figs["pv_elapsed"] = pv_elapsed(run)
        figs["similarity"] = similarity_matrices(run)
        figs["decoders"] = decoder_accuracy(run)
    return figs


def save_figures(figs: dict[str, Figure], folder: Union[str, os.PathLike], prefix: str = "") -> list[Path]:
    """Write each figure as ``folder/<prefix><name>.png`` (folder created) and close it; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = folder / f"{prefix}{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------ notebook helpers

def figures_dir(default: Union[str, os.PathLike] = "figures") -> Path:
    """Where the analyses save PNGs: $DRIFTSIM_FIGURES, else ``default`` (created)."""
    folder = Path(os.environ.get("DRIFTSIM_FIGURES", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------------------------ model meets data

def fit_curves(fits: dict, ax=None) -> Figure:
    """A recording's PV-correlation elapsed-time curve (points, bootstrap band over cells) with the model
    curves c·r∞(e^(−γΔ)) of one or more fits (``{label: driftsim.analysis.fit.Fit}``, the first one's data
    drawn), on one axis."""
    fig, ax = _axes(ax)
    first = next(iter(fits.values()))
    elapsed, curve = np.asarray(first.elapsed), np.asarray(first.curve)
    err = None
    if first.curve_ci is not None:
        lo, hi = np.asarray(first.curve_ci).T
        err = np.stack([curve - lo, hi - curve])
    ax.errorbar(elapsed, curve, yerr=err, fmt="o", color="black", capsize=3,
                label=f"recording ({first.cells} cells)")
    for (label, fit), color in zip(fits.items(), palette(len(fits))):
        ci = "" if fit.gamma_ci is None else f" [{fit.gamma_ci[0]:.3g}, {fit.gamma_ci[1]:.3g}]"
        ax.plot(fit.smooth_elapsed, fit.smooth_model, color=color,
                label=f"{label}: γ = {fit.gamma:.3g}{ci} /{fit.time_unit}, c = {fit.ceiling:.2f}, "
                      f"rms {fit.residual:.2g}")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set(xlabel=f"elapsed time Δ  [{first.time_unit}]", ylabel="PV correlation r(Δ)",
           title="population-vector correlation against elapsed time")
    _legend(ax)
    return fig


__all__ += ["fit_curves"]
