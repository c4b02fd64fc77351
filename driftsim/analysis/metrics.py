"""The field's measures of representational drift, on one labelled layout shared by simulated and recorded
populations (definitions: /work/shared/METRICS.md; contract: DESIGN.md "Drift metrics and recordings").

``responses`` is an :class:`xarray.DataArray` with dims (``session``, ``cell``, ``stimulus``) or
(``session``, ``cell``, ``stimulus``, ``trial``), a ``time`` coordinate along ``session`` (increasing
session times), optional ``cell`` / ``stimulus`` ids and an optional ``label`` coordinate along
``stimulus`` (class labels, for the decoders). :func:`as_responses` builds one from a numpy array; every
metric passes its input through :func:`check_responses` first. Session × session results have dims
(``session``, ``session_other``) with coordinates ``time`` / ``time_other``; :func:`elapsed_curve` turns
one into a curve over the session lag. Trial-averaged responses X_s[c, x] are written X_s below, and
corr is Pearson's correlation.

Sources, with the public code each definition was checked against:

- Deitch, Rubin & Ziv 2021, Curr Biol 31:4327 — ``zivlab/visual_drift``, ``zivlab/time_vs_experience``
  (scripts/population_vector_correlation.m, ensemble_rate_correlation.m, tuning_curve_correlation.m):
  population-vector, ensemble-rate and tuning-curve correlations, elapsed-time curves, internal structure.
- Marks & Goard 2021, Nat Commun 12:5169 — ``ucsb-goard-lab/Representational-Drift-Project``
  (StabilityProcessor.m): the representational drift index.
- Aitken, Garrett, Olsen & Mihalas 2022, PLoS Comput Biol 18:e1010716: drift geometry (their Eqs 1, 9,
  10, 12) and the relative cross-accuracy (Eq 14).
- Rule & O'Leary 2022, PNAS 119:e2106692119 — ``michaelerule/selfhealingcodes``: a decoder fixed on the
  first day against decoders cross-validated on each day.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import sklearn
import xarray as xr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from ..responses import TRIAL, as_responses, check_responses, check_vector, require_trials
from .decode import LinearDecoder

__all__ = ["as_responses", "check_responses", "decoders", "drift_geometry", "drift_index", "elapsed_curve",
           "participation_ratio", "pv_correlation", "rate_correlation", "rsa_stability", "similarity", "summary",
           "tuning_correlation"]

DEITCH = ("Deitch, Rubin & Ziv 2021, Curr Biol 31:4327 "
          "(zivlab/visual_drift, zivlab/time_vs_experience)")
MARKS_GOARD = ("Marks & Goard 2021, Nat Commun 12:5169 "
               "(ucsb-goard-lab/Representational-Drift-Project, StabilityProcessor.m)")
AITKEN = "Aitken, Garrett, Olsen & Mihalas 2022, PLoS Comput Biol 18:e1010716"
RULE = "Rule & O'Leary 2022, PNAS 119:e2106692119 (michaelerule/selfhealingcodes)"


def _stimuli(r: xr.DataArray, at_least: int, what: str) -> None:
    if r.sizes["stimulus"] < at_least:
        raise ValueError(f"{what} needs at least {at_least} stimuli; got {r.sizes['stimulus']}")


def _mean_last(a: np.ndarray) -> np.ndarray:
    # einsum: 3x faster than numpy's reduction over a short last axis (trials)
    return np.einsum("...r->...", a) / a.shape[-1]


def _trial_mean(r: xr.DataArray) -> xr.DataArray:
    """The mean over trials of checked responses (no NaN), or the responses themselves without a trial dim."""
    return xr.apply_ufunc(_mean_last, r, input_core_dims=[[TRIAL]]) if TRIAL in r.dims else r


def _halves(r: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Even and odd trial averages, numbered from 1 as in StabilityProcessor.m (even: 2nd, 4th, …)."""
    return tuple(_trial_mean(r.isel({TRIAL: slice(first, None, 2)})) for first in (1, 0))


def _along(a: xr.DataArray, dim: str) -> dict:
    """a's coordinates that lie along ``dim`` alone (e.g. time and session ids along session)."""
    return {n: c for n, c in a.coords.items() if c.dims == (dim,)}


def _other(a: xr.DataArray) -> xr.DataArray:
    """``a`` along ``session_other``, its session coordinates renamed name → name_other (time → time_other),
    to broadcast against ``a`` itself."""
    along = {n: f"{n}_other" for n, c in a.coords.items() if "session" in c.dims and n != "session"}
    return a.rename({"session": "session_other", **along})


def _flat(a: xr.DataArray, dim: str) -> xr.DataArray:
    # exact test: rounding in the mean would give a constant vector a spurious nonzero spread
    return a.max(dim) == a.min(dim)


def _pearson(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """corr along the last axis of a and b (broadcast against each other), over the entries where ``valid``
    (broadcast too) holds; NaN where a side is constant over them or fewer than 2 remain."""
    # shifting each side by one of its own entries makes a constant side exactly 0: an exact test, where
    # rounding in the mean would give a constant vector a spurious nonzero spread
    if valid is None or valid.all():
        a, b = a - a[..., :1], b - b[..., :1]
        ac, bc = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    else:
        n = valid.sum(-1, keepdims=True)

        def centred(v):
            v = np.where(valid, v - np.where(valid, v, -np.inf).max(-1, keepdims=True), 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(valid, v - v.sum(-1, keepdims=True) / n, 0.0)
        ac, bc = centred(a), centred(b)
    aa, bb = np.einsum("...i,...i->...", ac, ac), np.einsum("...i,...i->...", bc, bc)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.einsum("...i,...i->...", ac, bc) / np.sqrt(aa * bb)
    return np.where((aa > 0) & (bb > 0), c, np.nan)


def _corr(a: xr.DataArray, b: xr.DataArray, dim: str) -> xr.DataArray:
    """Pearson correlation along ``dim`` of finite responses; NaN where a side is constant."""
    return xr.apply_ufunc(_pearson, a, b, input_core_dims=[[dim], [dim]], join="exact")


def _session_pairs(a: xr.DataArray, dim: str, keep: xr.DataArray | None = None) -> xr.DataArray:
    """corr over ``dim`` between each session of ``a`` and each session again: dims (session, session_other,
    …). ``keep`` (session, ``dim``) selects the entries (cells) kept in both sessions of a pair. One row of
    sessions at a time, so memory stays at S·C·X; each pair once, into both of its places (symmetric)."""
    rest = [d for d in a.dims if d not in ("session", dim)]
    x = a.transpose("session", *rest, dim).values
    S, n = x.shape[0], x.shape[-1]
    k = None if keep is None else keep.transpose("session", dim).values.reshape(S, *[1] * len(rest), n)
    values = np.empty((S, *x.shape[:-1]))
    for i in range(S):
        values[i, i:] = values[i:, i] = _pearson(x[i], x[i:], None if k is None else k[i] & k[i:])
    coords = {**_session_coords(a), **{name: c for name, c in a.coords.items() if c.dims and set(c.dims) <= set(rest)}}
    return xr.DataArray(values, dims=("session", "session_other", *rest), coords=coords)


def _session_coords(a: xr.DataArray) -> dict:
    """a's coordinates along ``session`` alone, and the same along ``session_other`` (name_other)."""
    own = _along(a, "session")
    other = {(n + "_other" if n != "session" else "session_other"): ("session_other", c.values)
             for n, c in own.items()}
    return {**own, **other}


# ---------------------------------------------------------------------------------------------------
# Deitch, Rubin & Ziv 2021


def pv_correlation(responses: xr.DataArray, per_stimulus: bool = False, active_only: bool = True) -> xr.DataArray:
    """Population-vector correlation between sessions (Deitch, Rubin & Ziv 2021; zivlab/time_vs_experience
    scripts/population_vector_correlation.m).

    PV(s, s′) = mean over stimuli x of corr over cells (X_s[:, x], X_s′[:, x]), the cells kept being those
    active (mean response over stimuli > 0) in both sessions. A stimulus whose vector is constant over the
    kept cells has no correlation and is left out of the mean; a pair with fewer than 2 kept cells, or no
    stimulus left, is NaN (small, sparse recordings), and only data with no defined pair at all is refused.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]); trials are averaged first.
    per_stimulus : bool
        Return the correlation of every stimulus instead of their mean.
    active_only : bool
        Keep only cells active in both sessions, as Deitch et al. do with event rates. Pass False for
        responses that may be negative (e.g. Gaussian), to keep every cell.

    Returns
    -------
    xarray.DataArray
        [S, S] (``session``, ``session_other``); with ``per_stimulus`` [X, S, S] (``stimulus``, ``session``,
        ``session_other``). attrs ``cells_kept_min``: the fewest cells any pair kept; ``undefined``: the
        (pair, stimulus) correlations left out; ``pairs_undefined``: the NaN pairs of the mean.
    """
    r = check_responses(responses)
    pv = _trial_mean(r)
    keep = pv.mean("stimulus", skipna=False) > 0 if active_only else xr.ones_like(pv.isel(stimulus=0), dtype=bool)
    kept = (keep & _other(keep)).sum("cell")
    per = _session_pairs(pv, "cell", keep if active_only else None)  # NaN: < 2 cells kept or a constant vector
    defined = per.notnull()
    if not defined.any():
        raise ValueError(f"no pair of sessions has a population vector correlation: at most {int(kept.max())} cells "
                         f"active (mean response > 0) in both sessions of a pair, or population vectors constant "
                         f"over them (active_only=False keeps every cell)")
    if per_stimulus:
        out = per.transpose("stimulus", "session", "session_other")
    else:
        with warnings.catch_warnings():  # a pair with no stimulus defined is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out = per.mean("stimulus")
    out.name = "pv_correlation"
    out.attrs = {"long_name": "population-vector correlation" + (" per stimulus" if per_stimulus
                                                                  else ", mean over stimuli"),
                 "definition": "corr over cells active in both sessions of X_s[:, x] and X_s'[:, x]; a stimulus "
                               "whose vector is constant over those cells is left out (NaN per stimulus)",
                 "source": DEITCH, "active_only": int(active_only), "cells_kept_min": int(kept.min()),
                 "undefined": int((~defined).sum()), "pairs_undefined": int((~defined.any("stimulus")).sum())}
    return out


def elapsed_curve(matrix: xr.DataArray) -> xr.DataArray:
    """A session × session metric against elapsed time (Deitch, Rubin & Ziv 2021;
    zivlab/time_vs_experience scripts/population_vector_correlation.m): r(Δ) = mean over s of
    M[s, s + Δ], the Δ-th upper off-diagonal, NaN entries left out as there.

    Parameters
    ----------
    matrix : xarray.DataArray
        [..., S, S] with dims (…, ``session``, ``session_other``) and a ``time`` coordinate along
        ``session``; leading dims (e.g. ``network``) are kept.

    Returns
    -------
    xarray.DataArray
        [..., S] with dim ``lag`` (Δ = 0 … S−1) and coordinate ``elapsed`` [S]: the mean time difference
        t[s + Δ] − t[s] of the pairs averaged.
    """
    if not isinstance(matrix, xr.DataArray):
        raise TypeError(f"matrix must be an xarray.DataArray; got {type(matrix).__name__}")
    if "session" not in matrix.dims or "session_other" not in matrix.dims:
        raise ValueError(f"matrix needs dims 'session' and 'session_other'; it has {matrix.dims}")
    S = matrix.sizes["session"]
    if matrix.sizes["session_other"] != S or S < 2:
        raise ValueError(f"matrix must be square over at least 2 sessions; got {S} × {matrix.sizes['session_other']}")
    if "time" not in matrix.coords or matrix.coords["time"].dims != ("session",):
        raise ValueError("matrix needs a coordinate 'time' along 'session' (the metrics of this module carry it)")
    m = matrix.transpose(..., "session", "session_other")
    t = np.asarray(m.coords["time"].values, dtype=np.float64)
    with warnings.catch_warnings():  # an all-NaN diagonal is NaN, as with MATLAB's omitnan
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.stack([np.nanmean(np.diagonal(m.values, offset=k, axis1=-2, axis2=-1), axis=-1)
                           for k in range(S)], axis=-1)
    lead = m.dims[:-2]
    coords = {name: c for name, c in m.coords.items() if set(c.dims) <= set(lead)}
    coords.update(lag=np.arange(S), elapsed=("lag", np.array([np.mean(t[k:] - t[:S - k]) for k in range(S)])))
    return xr.DataArray(values, dims=lead + ("lag",), coords=coords, name=matrix.name,
                        attrs={**matrix.attrs, "elapsed_definition": "mean over s of M[s, s+lag]",
                               "curve_source": DEITCH})


def rate_correlation(responses: xr.DataArray) -> xr.DataArray:
    """Ensemble-rate correlation (Deitch, Rubin & Ziv 2021; zivlab/time_vs_experience
    scripts/ensemble_rate_correlation.m): corr over cells between sessions of the cells' mean responses
    m_s[c] = mean over stimuli (and trials) of the responses.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]).

    Returns
    -------
    xarray.DataArray
        [S, S] (``session``, ``session_other``).
    """
    r = check_responses(responses)
    rates = _trial_mean(r).mean("stimulus", skipna=False)
    flat = _flat(rates, "cell")
    if flat.any():
        raise ValueError(f"every cell has the same mean response in session {int(np.argmax(flat.values))}: the "
                         f"ensemble-rate correlation is undefined")
    out = _session_pairs(rates, "cell")
    out.name = "rate_correlation"
    out.attrs = {"long_name": "ensemble-rate correlation",
                 "definition": "corr over cells of the mean response over stimuli", "source": DEITCH}
    return out


def tuning_correlation(responses: xr.DataArray, reduce: str = "mean") -> xr.DataArray:
    """Tuning-curve correlation (Deitch, Rubin & Ziv 2021; zivlab/time_vs_experience
    scripts/tuning_curve_correlation.m): per cell corr over stimuli (X_s[c, :], X_s′[c, :]), then the mean
    (their calcium data) or median (their Neuropixels data) over cells.

    A cell whose tuning curve is constant in a session has no correlation for the pairs with that session
    and is left out of them; with responses ≥ 0 these are exactly the cells Deitch et al. drop as inactive.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]), at least 2 stimuli.
    reduce : {"mean", "median"}
        Reduction over cells.

    Returns
    -------
    xarray.DataArray
        [S, S] (``session``, ``session_other``); attrs ``cells_skipped``: cells with a constant tuning curve
        in at least one session.
    """
    if reduce not in ("mean", "median"):
        raise ValueError(f"reduce must be 'mean' or 'median'; got {reduce!r}")
    return _tuning_correlations(check_responses(responses), (reduce,))[0]


def _tuning_correlations(r: xr.DataArray, reductions: tuple[str, ...]) -> list[xr.DataArray]:
    """:func:`tuning_correlation` of checked responses, one per reduction over cells of the same per-cell
    correlations."""
    _stimuli(r, 2, "a tuning-curve correlation")
    tuning = _trial_mean(r)
    per = _session_pairs(tuning, "stimulus")  # [S, S, C]
    defined = per.notnull().sum("cell")
    if int(defined.min()) == 0:
        pair = dict(zip(defined.dims, (int(i) for i in np.unravel_index(np.argmin(defined.values), defined.shape))))
        raise ValueError(f"no cell has a non-constant tuning curve in both sessions {pair}: the tuning-curve "
                         f"correlation is undefined")
    skipped = int(_flat(tuning, "stimulus").any("session").sum())
    return [(per.mean("cell") if reduce == "mean" else per.median("cell")).rename("tuning_correlation").assign_attrs(
        long_name=f"tuning-curve correlation, {reduce} over cells",
        definition="per cell corr over stimuli of X_s[c, :] and X_s'[c, :]", source=DEITCH, cells_skipped=skipped)
        for reduce in reductions]


def _flat_stimuli(pv: np.ndarray) -> np.ndarray:
    """[S, X]: the stimuli whose population vector (pv [S, C, X]) is constant over cells (exact test)."""
    return pv.max(axis=1) == pv.min(axis=1)


def _similarity_values(pv: np.ndarray) -> np.ndarray:
    """[S, X, X] stimulus × stimulus correlation over cells of population vectors pv [S, C, X]; NaN in the
    rows and columns of a stimulus whose vector is constant over cells."""
    flat = _flat_stimuli(pv)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.stack([np.corrcoef(p, rowvar=False) for p in pv])
    undefined = flat[:, :, None] | flat[:, None, :]
    return np.where(undefined, np.nan, sim)


def _stimulus_coords(a: xr.DataArray) -> dict:
    """a's coordinates along ``stimulus`` alone, and the same along ``stimulus_other`` (name_other)."""
    own = _along(a, "stimulus")
    other = {("stimulus_other" if name == "stimulus" else f"{name}_other"): ("stimulus_other", c.values)
             for name, c in own.items()}
    return {**own, **other}


def similarity(responses: xr.DataArray) -> xr.DataArray:
    """Representational similarity, the internal structure of a session (Deitch, Rubin & Ziv 2021;
    zivlab/visual_drift): S_s[x, x′] = corr over cells (X_s[:, x], X_s[:, x′]). 1 − S_s is the correlation
    RDM of representational similarity analysis.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]), at least 2 stimuli.

    Returns
    -------
    xarray.DataArray
        [S, X, X] (``session``, ``stimulus``, ``stimulus_other``); NaN in the rows and columns of a stimulus
        whose population vector is constant over cells (attrs ``stimuli_undefined`` counts them).
    """
    r = check_responses(responses)
    _stimuli(r, 2, "a similarity matrix")
    pv = _trial_mean(r)
    return xr.DataArray(_similarity_values(pv.values), dims=("session", "stimulus", "stimulus_other"),
                        coords={**_along(pv, "session"), **_stimulus_coords(pv)}, name="similarity",
                        attrs={"long_name": "stimulus x stimulus correlation of population vectors",
                               "definition": "corr over cells of X_s[:, x] and X_s[:, x']", "source": DEITCH,
                               "stimuli_undefined": int(_flat_stimuli(pv.values).sum())})


def _triangles(pv: np.ndarray) -> np.ndarray:
    """[S, X(X−1)/2]: the upper triangles (above the diagonal) of the similarity matrices of pv [S, C, X]."""
    flat = _flat_stimuli(pv)
    if flat.any():
        s, x = np.argwhere(flat)[0]
        raise ValueError(f"the population vector of stimulus {x} in session {s} is constant over cells: its "
                         f"similarity to the other stimuli is undefined")
    sim = _similarity_values(pv)
    i, j = np.triu_indices(sim.shape[-1], k=1)
    tri = sim[:, i, j]
    flat = tri.max(axis=1) == tri.min(axis=1)
    if flat.any():
        raise ValueError(f"the similarity matrix of session {int(np.argmax(flat))} has equal entries everywhere: "
                         f"its correlation with other sessions is undefined")
    return tri


def _cross_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[S, S′]: corr(a[s], b[s′]) between the rows of a [S, n] and b [S′, n]."""
    return np.corrcoef(a, b)[: len(a), len(a):]


def rsa_stability(responses: xr.DataArray, normalise: bool = True) -> xr.DataArray:
    """Stability of the internal structure (Deitch, Rubin & Ziv 2021; zivlab/visual_drift): corr between
    sessions of the upper triangles of the similarity matrices S_s (:func:`similarity`).

    With trials and ``normalise``, each session's structure is measured on two halves of its trials (even
    and odd, as in Marks & Goard's StabilityProcessor.m) and the between-session value is divided by the
    within-session split-half value: with T_s^e, T_s^o the triangles of the even- and odd-trial averages,
    w_s = corr(T_s^e, T_s^o) and
    value(s, s′) = ½[corr(T_s^e, T_s′^o) + corr(T_s^o, T_s′^e)] / √(w_s w_s′).
    Both sides use half the trials each, so trial noise cancels: a session against itself gives exactly 1
    and a noisy population that does not drift gives ≈ 1.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]), at least 3 stimuli.
    normalise : bool
        Divide by the split-half value (needs ≥ 2 trials when there is a trial dim; without one there is
        nothing to split and the value is not normalised: attrs ``normalised`` says which).

    Returns
    -------
    xarray.DataArray
        [S, S] (``session``, ``session_other``); normalised, attrs ``split_half`` [S] holds w_s, and the
        pairs with a session whose w_s ≤ 0 (no structure reproducible within it) are NaN.
    """
    return _rsa_stability(check_responses(responses), normalise)


def _rsa_stability(r: xr.DataArray, normalise: bool, halves: tuple | None = None) -> xr.DataArray:
    """:func:`rsa_stability` of checked responses; ``halves``: their :func:`_halves`, when already computed."""
    if normalise and TRIAL in r.dims:
        require_trials(r, "the split-half normalisation of rsa_stability (normalise=True)")
    _stimuli(r, 3, "the stability of a similarity structure (its upper triangle)")
    attrs = {"long_name": "stability of the stimulus x stimulus similarity structure",
             "definition": "corr between sessions of the upper triangles of the similarity matrices",
             "source": DEITCH}
    if normalise and TRIAL in r.dims:
        even, odd = (_triangles(h.values) for h in (halves or _halves(r)))
        split = np.diag(_cross_corr(even, odd))
        reliable = np.where(split > 0, split, np.nan)  # no reproducible structure within the session
        values = 0.5 * (_cross_corr(even, odd) + _cross_corr(odd, even)) / np.sqrt(np.outer(reliable, reliable))
        attrs.update(normalised=1, split_half=split)
    else:
        tri = _triangles(_trial_mean(r).values)
        values = _cross_corr(tri, tri)
        attrs.update(normalised=0)
    return _session_matrix(values, r, "rsa_stability", attrs)


def _session_matrix(values: np.ndarray, r: xr.DataArray, name: str, attrs: dict) -> xr.DataArray:
    """[S, S] values as a (session, session_other) DataArray carrying r's session coordinates."""
    return xr.DataArray(values, dims=("session", "session_other"), coords=_session_coords(r), name=name,
                        attrs=attrs)


# ---------------------------------------------------------------------------------------------------
# Marks & Goard 2021


def drift_index(responses: xr.DataArray, floor: float = 1e-3) -> xr.DataArray:
    """Representational drift index per cell (Marks & Goard 2021; ucsb-goard-lab/Representational-Drift-
    Project StabilityProcessor.m, ``Evenodd``), each session s against the first:

    CC_ws = max(0, ½[corr(E_0, O_0) + corr(E_s, O_s)]), CC_bs = max(0, ½[corr(E_0, O_s) + corr(E_s, O_0)]),
    RDI = (CC_ws − CC_bs) / (CC_ws + CC_bs),

    where E_s, O_s are the cell's even- and odd-trial mean responses over stimuli (trials numbered from 1)
    and corr runs over stimuli. As in their code, CC_ws ≤ 0 is set to ``floor`` (so an unreliable cell
    gets RDI = 1, not 0/0). RDI ≈ 0: no drift; ≈ 1: the cell's tuning is unrelated to its tuning in session 0.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus, trial) with at least 2 trials and 2 stimuli.
    floor : float
        Value given to CC_ws ≤ 0 (their CC_FUDGE = 0.001).

    Returns
    -------
    xarray.DataArray
        [S, C] (``session``, ``cell``); NaN for a cell whose even or odd tuning curve is constant in
        session 0 or s (attrs ``cells_undefined`` counts the cells with any NaN).
    """
    if not floor > 0:
        raise ValueError(f"floor must be > 0 (the value given to CC_ws <= 0); got {floor}")
    return _drift_index(check_responses(responses), floor)


def _drift_index(r: xr.DataArray, floor: float = 1e-3, halves: tuple | None = None) -> xr.DataArray:
    """:func:`drift_index` of checked responses; ``halves``: their :func:`_halves`, when already computed."""
    require_trials(r, "the representational drift index (even vs odd trials)")
    _stimuli(r, 2, "the representational drift index (correlation over stimuli)")
    even, odd = halves or _halves(r)
    e0, o0 = even.isel(session=0, drop=True), odd.isel(session=0, drop=True)
    ws = (0.5 * (_corr(e0, o0, "stimulus") + _corr(even, odd, "stimulus"))).clip(min=0)
    bs = (0.5 * (_corr(e0, odd, "stimulus") + _corr(even, o0, "stimulus"))).clip(min=0)
    ws = ws.where(~(ws <= 0), floor)
    rdi = ((ws - bs) / (ws + bs)).transpose("session", "cell")
    undefined = int(rdi.isnull().any("session").sum())
    if undefined == r.sizes["cell"]:
        raise ValueError("every cell has a constant even- or odd-trial tuning curve: the drift index is undefined")
    rdi.name = "drift_index"
    rdi.attrs = {"long_name": "representational drift index against session 0",
                 "definition": "(CC_ws - CC_bs) / (CC_ws + CC_bs), even/odd trials, CC rectified at 0",
                 "source": MARKS_GOARD, "floor": floor, "cells_undefined": undefined}
    return rdi


# ---------------------------------------------------------------------------------------------------
# Aitken, Garrett, Olsen & Mihalas 2022


def _session_index(r: xr.DataArray, s: int) -> int:
    S = r.sizes["session"]
    if not -S <= s < S:
        raise ValueError(f"session {s} is out of range for {S} sessions")
    return s % S


def _groups(r: xr.DataArray, s: int, group: str) -> np.ndarray:
    """[G, m, C]: the members (response vectors) of each stimulus group of session s."""
    x = r.isel(session=s)
    if group == "stimulus":
        if x.sizes.get(TRIAL, 0) < 2:
            raise ValueError("group='stimulus' (one group per stimulus, its trials as members) needs at least 2 "
                             "trials per stimulus; use group='session' for trial-averaged responses")
        return np.ascontiguousarray(x.transpose("stimulus", TRIAL, "cell").values)  # what follows runs 1.4x faster
    if group == "session":
        return x.transpose(..., "cell").values.reshape(1, -1, x.sizes["cell"])
    raise ValueError(f"group must be 'stimulus' or 'session'; got {group!r}")


def _pca(members: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (members [G, m, C]): principal directions [G, N, C], by variance, and the participation
    ratio D = (Σ v)² / Σ v² [G] of the variance ratios v (Aitken et al. Eq 1)."""
    shifted = members - members[:, :1]  # a group of equal members becomes exactly 0: an exact test below
    centred = shifted - shifted.mean(axis=1, keepdims=True)
    gram = centred.shape[1] < centred.shape[2]
    # fewer members than cells (trials per stimulus): the m × m Gram matrix is the smaller eigenproblem
    # (5x faster than the SVD); directions uᵀX/σ, those of the null space (σ² ≤ 1e-12 of the largest) left 0
    second = centred @ centred.transpose(0, 2, 1) if gram else centred.transpose(0, 2, 1) @ centred
    # its trace is 0 for a group of equal members, and for one whose spread underflows: told apart exactly
    maybe = np.flatnonzero(np.trace(second, axis1=1, axis2=2) == 0)
    flat = maybe[~centred[maybe].any(axis=(1, 2))]
    if len(flat):
        raise ValueError(f"stimulus group {int(flat[0])} of session {s} has no variance across its members: "
                         f"its principal components are undefined")
    lam, vectors = np.linalg.eigh(second)
    lam, vectors = lam[:, ::-1].clip(min=0), vectors[:, :, ::-1].transpose(0, 2, 1)  # by variance, one a row
    if gram:
        real = lam > 1e-12 * lam[:, :1]
        scale = np.where(real, 1.0 / np.where(real, np.sqrt(lam), 1.0), 0.0)  # on uᵀ, not on the C-long rows
        directions = (vectors * scale[..., None]) @ centred
    else:
        directions = vectors
    ratio = lam / lam.sum(axis=-1, keepdims=True)
    return directions, 1.0 / (ratio**2).sum(axis=-1)


def _dimension(D: np.ndarray) -> np.ndarray:
    # ⌈D⌉, with D that should be an integer but carries rounding (e.g. 2 + 1e-15) counted as that integer
    return np.ceil(D - 1e-9).astype(int)


def participation_ratio(responses: xr.DataArray, session: int, group: str = "stimulus") -> float:
    """Dimension of the representation (Aitken et al. 2022, Eq 1): D = (Σ v_i)² / Σ v_i² of the PCA
    variance ratios v_i of each stimulus group of one session, mean over groups.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]).
    session : int
        Session position (negative counts from the end).
    group : {"stimulus", "session"}
        ``stimulus``: one group per stimulus, its trials as members (Aitken et al.; needs ≥ 2 trials);
        ``session``: one group of every (stimulus, trial) response of the session.

    Returns
    -------
    float
    """
    r = check_responses(responses)
    s = _session_index(r, session)
    return float(np.mean(_pca(_groups(r, s, group), s)[1]))


def drift_geometry(responses: xr.DataArray, s0: int = 0, s1: int = -1, group: str = "stimulus") -> dict:
    """Geometry of the drift from session s0 to s1 (Aitken et al. 2022, Eqs 1, 9, 10, 11, 12), computed per
    stimulus group and averaged over groups. For a group with members in s0 of mean x̄, variational space
    W (its first ⌈D⌉ principal directions in s0), W′ that of s1, and drift vector d = x̄′ − x̄:

    - ``participation_ratio``: D in s0; ``dimension``: ⌈D⌉;
    - ``drift_in_variational_fraction``: ‖W d‖² / ‖d‖² (NaN for a group that does not move);
    - ``chance_fraction``: ⌈D⌉ / n, its value for a randomly oriented drift in n = C dimensions;
    - ``subspace_overlap``: Γ = Σ_IJ (w_I · w′_J)² / min(⌈D⌉, ⌈D′⌉) ∈ [0, 1];
    - ``angle``: angle between x̄ and x̄′ in degrees; ``relative_magnitude``: ‖d‖ / ‖x̄‖.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]).
    s0, s1 : int
        Earlier and later session positions.
    group : {"stimulus", "session"}
        As in :func:`participation_ratio`.

    Returns
    -------
    dict of str to float
    """
    r = check_responses(responses)
    return _geometry(_session_pca(r, _session_index(r, s0), group), _session_pca(r, _session_index(r, s1), group))


def _session_pca(r: xr.DataArray, s: int, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group means [G, C], principal directions [G, N, C], participation ratios [G]) of session s."""
    members = _groups(r, s, group)
    return (members.mean(axis=1), *_pca(members, s))


def _geometry(first: tuple, later: tuple) -> dict:
    """:func:`drift_geometry` from the :func:`_session_pca` of the earlier and the later session."""
    (mean0, w0, D0), (mean1, w1, D1) = first, later
    k0, k1 = _dimension(D0), _dimension(D1)
    d = mean1 - mean0
    # every group at once, its first k0 (k1) directions selected by masks
    in0 = np.arange(w0.shape[1]) < k0[:, None]  # [G, N]
    in1 = np.arange(w1.shape[1]) < k1[:, None]
    dd = np.einsum("gc,gc->g", d, d)
    inside = np.einsum("gi,gi->g", (w0 @ d[..., None])[..., 0] ** 2, in0)  # batched matmuls: BLAS, 3x einsum
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(dd > 0, inside / dd, np.nan)
    cross = (w0 @ w1.transpose(0, 2, 1)) ** 2 * (in0[:, :, None] & in1[:, None, :])
    overlap = cross.sum(axis=(1, 2)) / np.minimum(k0, k1)
    norm0, norm1 = np.linalg.norm(mean0, axis=-1), np.linalg.norm(mean1, axis=-1)
    cos = np.clip(np.sum(mean0 * mean1, axis=-1) / (norm0 * norm1), -1.0, 1.0)
    with warnings.catch_warnings():  # every group still: the fraction is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        moved = float(np.nanmean(fraction))
    return {"participation_ratio": float(D0.mean()), "dimension": float(k0.mean()),
            "drift_in_variational_fraction": moved, "chance_fraction": float(np.mean(k0 / mean0.shape[-1])),
            "subspace_overlap": float(np.mean(overlap)), "angle": float(np.degrees(np.arccos(cos)).mean()),
            "relative_magnitude": float(np.mean(np.linalg.norm(d, axis=-1) / norm0))}


def _labels(r: xr.DataArray, labels) -> np.ndarray:
    if labels is None:
        if "label" not in r.coords:
            raise ValueError("decoders need class labels: pass labels=[one per stimulus] or give responses a "
                             "'label' coordinate along 'stimulus'")
        y = np.asarray(r.coords["label"].values)
    else:
        y = check_vector("labels", labels, r.sizes["stimulus"], "stimulus")
        if pd.isna(y).any():
            raise ValueError("labels has missing values; every stimulus needs a class")
    if len(np.unique(y)) < 2:
        raise ValueError(f"decoders need at least 2 classes among the stimulus labels; got {np.unique(y)}")
    return y


def decoders(responses: xr.DataArray, labels=None, cv_folds: int = 5, seed: int = 0) -> xr.Dataset:
    """Fixed and retrained population decoders (Rule & O'Leary 2022, michaelerule/selfhealingcodes: one
    fixed decoder against same-day cross-validated ones; Aitken et al. 2022, Eq 14: a(s→s′)/a(s′→s′)): a
    :class:`~driftsim.analysis.decode.LinearDecoder` (standardised logistic regression, lbfgs) reads the class of a
    stimulus from one response vector. Samples are (stimulus, trial) pairs with the stimulus's label; with
    no trials each stimulus is one sample.

    - ``fixed[s]`` = a(0→s): fitted on every sample of session 0, scored on session s (s = 0:
      cross-validated, i.e. ``retrained[0]``); it keeps session 0's standardisation, as a fixed reader would;
    - ``retrained[s]`` = a(s→s): cross-validated within session s, whose responses are z-scored once per cell
      (label-free, so the folds share it: a fifth of the fits' time each), each fold's fit warm-started from
      the previous fold's (the same optimum to lbfgs's tolerance, a third fewer seconds);
    - ``relative_cross[s]`` = a(0→s) / a(s→s).

    Folds are stratified over samples, shuffled with ``seed``, k = min(cv_folds, smallest class); every
    session uses the same folds.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]).
    labels : array_like, optional
        [X] class of each stimulus; default the ``label`` coordinate.
    cv_folds : int
        Number of folds (at least 2).
    seed : int
        Seed of the fold shuffle.

    Returns
    -------
    xarray.Dataset
        ``fixed``, ``retrained``, ``relative_cross``: [S] along ``session``.
    """
    return _decoders(check_responses(responses), labels, cv_folds, seed)


def _decoders(r: xr.DataArray, labels, cv_folds: int, seed: int) -> xr.Dataset:
    """:func:`decoders` of checked responses."""
    if int(cv_folds) != cv_folds or cv_folds < 2:
        raise ValueError(f"cv_folds must be an integer >= 2; got {cv_folds}")
    y = np.repeat(_labels(r, labels), r.sizes.get(TRIAL, 1))
    k = min(int(cv_folds), int(np.unique(y, return_counts=True)[1].min()))
    if k < 2:
        raise ValueError("cross-validation needs at least 2 samples (stimuli x trials) of every class")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    samples = r.transpose("session", ..., "cell").values.reshape(r.sizes["session"], -1, r.sizes["cell"])
    split = list(folds.split(samples[0], y))
    # checked finite above, our own parameters: sklearn's checks skipped, 30 % of the decoders' time
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        retrained = np.array([_cross_validated(StandardScaler().fit_transform(x), y, split) for x in samples])
        at_first = LinearDecoder(solver="lbfgs").fit(samples[0], y)
        fixed = np.array([retrained[0]] + [np.mean(at_first.predict(x) == y) for x in samples[1:]])
    source = f"{RULE}; {AITKEN}"
    return xr.Dataset(
        {"fixed": ("session", fixed, {"long_name": "accuracy of the decoder fitted on session 0", "source": source}),
         "retrained": ("session", retrained, {"long_name": "cross-validated accuracy within the session",
                                              "source": source}),
         "relative_cross": ("session", fixed / retrained, {"long_name": "a(0->s) / a(s->s)", "source": AITKEN})},
        coords=_along(r, "session"), attrs={"cv_folds": k, "seed": seed})


def _cross_validated(z: np.ndarray, y: np.ndarray, split: list) -> float:
    """Mean test accuracy over the folds ``split`` of logistic regressions (lbfgs) on the z-scored samples z.

    Each fold's fit starts from the previous fold's solution (``warm_start``): the folds share most samples,
    and the L2-penalised loss is strictly convex, so this reaches the same optimum, to lbfgs's tolerance, in
    a quarter of the iterations (450 → 111 over a default recording's 50 fits). Scored from the fitted
    coefficients (the class of the larger decision value), without ``predict``'s input checks."""
    clf, right = LogisticRegression(max_iter=1000, warm_start=True), []
    for train, test in split:
        clf.fit(z[train], y[train])
        decision = z[test] @ clf.coef_.T + clf.intercept_
        guess = clf.classes_[(decision[:, 0] > 0).astype(int) if decision.shape[1] == 1 else decision.argmax(1)]
        right.append(np.mean(guess == y[test]))
    return float(np.mean(right))


# ---------------------------------------------------------------------------------------------------
# all at once


def summary(responses: xr.DataArray, labels=None, cv_folds: int = 5, seed: int = 0,
            active_only: bool = True) -> xr.Dataset:
    """Every [S, S] and [S] metric of this module that the data's layout allows, for storing under
    ``/metrics/<source>/`` (DESIGN.md "Drift metrics and recordings").

    Variables: ``pv_correlation``, ``rate_correlation``; with ≥ 2 stimuli ``tuning_correlation`` (mean over
    cells) and ``tuning_correlation_median``; with ≥ 3 stimuli ``rsa_stability`` (normalised when there are
    ≥ 2 trials); with labels (argument or ``label`` coordinate) ``decoder_fixed``, ``decoder_retrained``,
    ``decoder_relative_cross``; with ≥ 2 trials and ≥ 2 stimuli ``drift_index`` (mean over cells, against
    session 0) and the geometry of session s against session 0 per s: ``participation_ratio``,
    ``drift_in_variational_fraction`` (NaN at s = 0), ``subspace_overlap``.

    Which variables exist depends only on the layout (sessions, stimuli, trials, labels), so the summaries of
    several networks of one recording stack. A metric that these data leave undefined (a population of a few
    silent cells, constant tuning, a class too small to cross-validate) is NaN, with the reason in attrs
    ``skipped``, which also lists what the layout leaves out.

    Parameters
    ----------
    responses : xarray.DataArray
        (session, cell, stimulus[, trial]).
    labels, cv_folds, seed :
        As in :func:`decoders`.
    active_only : bool
        As in :func:`pv_correlation`.

    Returns
    -------
    xarray.Dataset
    """
    r = check_responses(responses)
    trials, stimuli, S = r.sizes.get(TRIAL, 0) >= 2, r.sizes["stimulus"], r.sizes["session"]
    out, skipped = {}, []

    def guarded(names, shape, compute):
        try:
            out.update(compute())
        except ValueError as e:
            skipped.append(f"{', '.join(names)}: {e}")
            for name in names:
                out[name] = (_session_matrix(np.full((S, S), np.nan), r, name, {}) if shape == "pairs" else
                             xr.DataArray(np.full(S, np.nan), dims="session", coords=_along(r, "session")))

    mean = _trial_mean(r)  # all that these four read: averaged once
    halves = _halves(r) if trials else None  # and what rsa_stability and drift_index read
    guarded(["pv_correlation"], "pairs", lambda: {"pv_correlation": pv_correlation(mean, active_only=active_only)})
    guarded(["rate_correlation"], "pairs", lambda: {"rate_correlation": rate_correlation(mean)})
    if stimuli >= 2:
        guarded(["tuning_correlation", "tuning_correlation_median"], "pairs", lambda: dict(zip(
            ["tuning_correlation", "tuning_correlation_median"], _tuning_correlations(mean, ("mean", "median")))))
    else:
        skipped.append("tuning_correlation and drift_index: one stimulus")
    if stimuli >= 3:
        guarded(["rsa_stability"], "pairs", lambda: {"rsa_stability": _rsa_stability(r, trials, halves)})
    else:
        skipped.append("rsa_stability: fewer than 3 stimuli")
    if labels is not None or "label" in r.coords:
        names = ["decoder_fixed", "decoder_retrained", "decoder_relative_cross"]
        guarded(names, "sessions", lambda: {f"decoder_{name}": v
                                            for name, v in _decoders(r, labels, cv_folds, seed).data_vars.items()})
    else:
        skipped.append("decoders: no labels")
    if trials:
        if stimuli >= 2:
            guarded(["drift_index"], "sessions", lambda: {"drift_index": _drift_index(r, halves=halves).mean(
                "cell", keep_attrs=True).assign_attrs(
                long_name="representational drift index against session 0, mean over cells")})
        guarded(["participation_ratio", "drift_in_variational_fraction", "subspace_overlap"], "sessions",
                lambda: _geometry_per_session(r))
    else:
        skipped.append("drift_index and drift geometry: fewer than 2 trials")
    return xr.Dataset(out, attrs={"skipped": "; ".join(skipped)})


def _geometry_per_session(r: xr.DataArray) -> dict:
    """The drift geometry of each session against session 0 (stimulus groups), each session's PCA once."""
    pca = [_session_pca(r, s, "stimulus") for s in range(r.sizes["session"])]
    geometry = [_geometry(pca[0], p) for p in pca]
    per_session = {"participation_ratio": [float(p[2].mean()) for p in pca],
                   **{name: [g[name] for g in geometry] for name in ("drift_in_variational_fraction",
                                                                     "subspace_overlap")}}
    return {name: xr.DataArray(values, dims="session", coords=_along(r, "session"), attrs={"source": AITKEN})
            for name, values in per_session.items()}
