"""The labelled layout of recorded and simulated responses that the drift metrics take
(DESIGN.md "Drift metrics and recordings"): an :class:`xarray.DataArray` with dims (``session``, ``cell``,
``stimulus``[, ``trial``]) and a ``time`` coordinate along ``session``. Built by :func:`as_responses`, checked by
:func:`check_responses`; ``driftsim.analysis.metrics`` computes on it and ``driftsim.io.recordings`` reads
recordings into it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["DIMS", "TRIAL", "as_responses", "check_responses", "check_vector", "require_trials"]

DIMS = ("session", "cell", "stimulus")
TRIAL = "trial"


def check_vector(name: str, values, n: int, per: str) -> np.ndarray:
    """[n]: ``values`` as a 1-D array of length n (one per ``per``), or a ValueError naming ``name``."""
    v = np.asarray(values)
    if v.shape != (n,):
        raise ValueError(f"{name} has shape {v.shape}; it needs one value per {per} ({n})")
    return v


def as_responses(values, time=None, labels=None, cells=None, stimuli=None) -> xr.DataArray:
    """Recorded or simulated responses as the labelled array every metric takes.

    Parameters
    ----------
    values : array_like
        [S, C, X] trial-averaged (or single-trial) responses, or [S, C, X, R] with R trials per stimulus.
    time : array_like, optional
        [S] session times, strictly increasing; default 0, 1, …, S−1.
    labels : array_like, optional
        [X] class label of each stimulus (coordinate ``label``, read by :func:`decoders`).
    cells, stimuli : array_like, optional
        [C] cell ids and [X] stimulus ids (coordinates ``cell``, ``stimulus``).

    Returns
    -------
    xarray.DataArray
        dims (``session``, ``cell``, ``stimulus``[, ``trial``]), float64, checked by :func:`check_responses`.
    """
    values = np.asarray(values)
    if values.ndim not in (3, 4):
        raise ValueError(f"responses must be an array [sessions, cells, stimuli] or [sessions, cells, stimuli, "
                         f"trials]; got shape {values.shape}")
    S, C, X = values.shape[:3]
    t = np.arange(S, dtype=np.float64) if time is None else check_vector("time", time, S, "session")
    coords = {"time": ("session", t)}
    if cells is not None:
        coords["cell"] = check_vector("cells", cells, C, "cell")
    if stimuli is not None:
        coords["stimulus"] = check_vector("stimuli", stimuli, X, "stimulus")
    if labels is not None:
        coords["label"] = ("stimulus", check_vector("labels", labels, X, "stimulus"))
    dims = DIMS + ((TRIAL,) if values.ndim == 4 else ())
    return check_responses(xr.DataArray(values, dims=dims, coords=coords))


def check_responses(responses: xr.DataArray, *, trials_for: str | None = None) -> xr.DataArray:
    """The validator every metric calls: ``responses`` in canonical order (``session``, ``cell``,
    ``stimulus``[, ``trial``]) as float64, or a ValueError naming what is wrong.

    Rejected: a non-DataArray (TypeError), missing or unknown dims, fewer than 2 sessions or 2 cells, no
    ``time`` coordinate along ``session`` or one that is not finite and strictly increasing, non-numeric,
    NaN or infinite responses, responses that are all equal (no correlation is defined), a ``label``
    coordinate that is not along ``stimulus`` or has missing values, and — when ``trials_for`` names a
    metric that needs trials — no ``trial`` dim or fewer than 2 trials.
    """
    if not isinstance(responses, xr.DataArray):
        raise TypeError(f"responses must be an xarray.DataArray with dims {DIMS} (+ 'trial'); got "
                        f"{type(responses).__name__} (build one with as_responses)")
    missing = [d for d in DIMS if d not in responses.dims]
    unknown = [d for d in responses.dims if d not in DIMS + (TRIAL,)]
    if missing or unknown:
        raise ValueError(f"responses have dims {responses.dims}: missing {missing}, unknown {unknown}; "
                         f"allowed: {DIMS} and optionally '{TRIAL}'")
    r = responses.transpose(*DIMS, *([TRIAL] if TRIAL in responses.dims else []))
    if not (np.issubdtype(r.dtype, np.integer) or np.issubdtype(r.dtype, np.floating)
            or np.issubdtype(r.dtype, np.bool_)):
        raise ValueError(f"responses must be real numbers; got dtype {r.dtype}")
    r = r.astype(np.float64, copy=False)  # metrics only read it
    for dim, what in (("session", "drift metrics compare sessions"), ("cell", "correlations over cells")):
        if r.sizes[dim] < 2:
            raise ValueError(f"responses have {r.sizes[dim]} {dim}(s); {what} need at least 2")
    if "time" not in r.coords or r.coords["time"].dims != ("session",):
        raise ValueError("responses need a coordinate 'time' along 'session' (session times), e.g. "
                         "responses.assign_coords(time=('session', t)) or as_responses(values, time=t)")
    t = np.asarray(r.coords["time"].values, dtype=np.float64)
    if not np.isfinite(t).all() or (np.diff(t) <= 0).any():
        raise ValueError(f"session times must be finite and strictly increasing; got time = {t}")
    low, high = r.values.min(), r.values.max()  # NaN or inf in the data shows in one of them
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = ~np.isfinite(r.values)
        first = dict(zip(r.dims, (int(i) for i in np.argwhere(bad)[0])))
        raise ValueError(f"responses contain {int(bad.sum())} NaN or infinite values (first at {first}); "
                         f"drop or fill them before computing drift metrics")
    if low == high:
        raise ValueError(f"responses are constant (every value is {r.values.flat[0]}): no correlation is defined")
    if "label" in r.coords:
        if r.coords["label"].dims != ("stimulus",):
            raise ValueError(f"the 'label' coordinate must lie along 'stimulus' (one class per stimulus); "
                             f"it has dims {r.coords['label'].dims}")
        if pd.isna(r.coords["label"].values).any():
            raise ValueError("the 'label' coordinate has missing values; every stimulus needs a class")
    if trials_for is not None:
        require_trials(r, trials_for)
    return r


def require_trials(responses: xr.DataArray, what: str) -> None:
    """A ValueError naming ``what`` unless ``responses`` have a ``trial`` dim of at least 2 trials."""
    trials = responses.sizes.get(TRIAL, 0)
    if trials < 2:
        raise ValueError(f"{what} needs responses with a '{TRIAL}' dim of at least 2 trials per "
                         f"stimulus; got {trials if TRIAL in responses.dims else 'no trial dim'}")
