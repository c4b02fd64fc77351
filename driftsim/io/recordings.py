"""Recordings in driftsim's labelled layout: from a run's observed population, from NWB files, from
netCDF / xarray files, and to netCDF.

The layout is that of driftsim.analysis.metrics: an ``xarray.DataArray`` with dims (session, cell,
stimulus[, trial]), the session times as coordinate ``time`` (its ``units`` attribute names the unit),
``label`` along stimulus where the classes are known, and cell and stimulus ids as coordinates. A netCDF
file in the layout holds such an array as the variable ``responses`` (or as its only variable).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from ..responses import as_responses, check_responses
from .store import PathLike, check_run

__all__ = ["TIME_UNITS", "load_recording", "observed_sources", "recording_from_run", "write_netcdf"]

TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0}  # seconds per unit
MODEL_TIME = "model time (SPEC §1.4)"
_DIMS = ("session", "cell", "stimulus")


def _recorded_everywhere(da: xr.DataArray, where: str) -> xr.DataArray:
    """The cells with a finite response in every session, stimulus and trial (the cells tracked through
    the whole recording); attrs ``cells_dropped`` counts the others."""
    finite = np.isfinite(da).all([d for d in da.dims if d != "cell"])
    kept = da.isel(cell=np.flatnonzero(finite.values))
    if kept.sizes["cell"] < 2:
        raise ValueError(f"{where}: {kept.sizes['cell']} of {da.sizes['cell']} cells have responses in every "
                         "session; the drift metrics need at least 2")
    kept.attrs["cells_dropped"] = int(da.sizes["cell"] - kept.sizes["cell"])
    return kept


def _in_unit(da: xr.DataArray, unit: str | None, where: str) -> xr.DataArray:
    """``da`` with its session times converted to ``unit`` (one of TIME_UNITS; None: as stored)."""
    if unit is None:
        return da
    if unit not in TIME_UNITS:
        raise ValueError(f"time_unit={unit!r} is not allowed; choose one of {sorted(TIME_UNITS)}")
    have = da["time"].attrs.get("units")
    if have not in TIME_UNITS:
        raise ValueError(f"{where}: the session times have units {have!r}, which cannot be converted to {unit!r} "
                         f"(convertible: {sorted(TIME_UNITS)})")
    out = da.assign_coords(time=("session", da["time"].values * TIME_UNITS[have] / TIME_UNITS[unit]))
    out["time"].attrs["units"] = unit
    return out


def _from_netcdf(path: Path) -> xr.DataArray:
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    names = ["responses"] if "responses" in ds.data_vars else list(ds.data_vars)
    if len(names) != 1:
        raise ValueError(f"{path}: no variable 'responses' and {len(names)} others ({names}); a recording file "
                         "holds one array (session, cell, stimulus[, trial])")
    da = ds[names[0]]
    missing = [d for d in _DIMS if d not in da.dims]
    if missing:
        raise ValueError(f"{path}: variable {names[0]!r} lacks the dims {missing} (it has {da.dims}); a recording "
                         "has dims ('session', 'cell', 'stimulus') and optionally 'trial'")
    if "time" not in da.coords:
        raise ValueError(f"{path}: variable {names[0]!r} has no coordinate 'time' along 'session' (the sessions' "
                         "times)")
    return da


def _is_nwb(path: Path) -> bool:
    if not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as h5:
        return "nwb_version" in h5.attrs


def load_recording(path: PathLike | Iterable[PathLike], *, series: str | None = None,
                   time_unit: str | None = None) -> xr.DataArray:
    """A recording as the labelled array the drift metrics take.

    Parameters
    ----------
    path : an NWB file, several NWB files (sessions spread over files, joined by cell ids), or a netCDF
        file in the labelled layout (module docstring).
    series : NWB only: the name of the response series when the file holds several.
    time_unit : convert the session times to "s", "min", "h" or "day" (None: as stored; NWB: seconds).

    Returns
    -------
    xarray.DataArray
        (session, cell, stimulus[, trial]) float64, validated by driftsim.responses.check_responses (the
        metrics' own check: what passes, they take); cells without a response in every session are left
        out (attrs ``cells_dropped``).
    """

    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    if not paths:
        raise ValueError("no recording file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such recording file")
    where = ", ".join(map(str, paths))
    if all(_is_nwb(p) for p in paths):
        from .nwb import read_nwb
        da = read_nwb(paths, series=series)
    elif len(paths) == 1:
        da = _from_netcdf(paths[0])
    else:
        raise ValueError(f"{where}: several files make one recording only as NWB files; a netCDF recording is "
                         "one file")
    da = _in_unit(_recorded_everywhere(da, where), time_unit, where)
    checked = check_responses(da)
    checked.name = "responses"
    return checked


def observed_sources(path: PathLike) -> list[str]:
    """The sources (theory, sim) whose observed populations (/observe/<source>) a run file holds."""
    check_run(path)
    with h5py.File(path, "r") as h5:
        return [s for s in ("theory", "sim") if f"observe/{s}/responses" in h5]


def recording_from_run(path: PathLike, source: str, network: int) -> xr.DataArray:
    """One observed network of a run (/observe/<source>/responses [S, A, C, X, R], DESIGN.md "Drift metrics
    and recordings") as a recording: stimuli are the task's inputs, training points first, labelled by
    /task/y_train then /task/y_test; session times are drift times since the freeze, in model time units."""

    sources = observed_sources(path)
    if source not in sources:
        raise ValueError(f"{path} holds no observed population of source {source!r} (/observe/{source}); "
                         f"it has {sources or 'none (observe.sessions = 0)'}")
    with h5py.File(path, "r") as h5:
        g = h5[f"observe/{source}"]
        A = g["responses"].shape[1]
        if not 0 <= network < A:
            raise ValueError(f"network={network} is not one of the {A} observed networks 0..{A - 1}")
        values, t = g["responses"][:, network], g["t"][()]
        labels = np.concatenate([h5["task/y_train"][()], h5["task/y_test"][()]])
    da = as_responses(values, time=t, labels=labels, cells=np.arange(values.shape[1]),
                      stimuli=np.arange(values.shape[2]))
    da.name = "responses"
    da["time"].attrs["units"] = MODEL_TIME
    da.attrs.update(source=source, network=int(network))
    return da


def write_netcdf(recording: xr.DataArray, path: PathLike, attrs: dict | None = None) -> Path:
    """Write a recording as netCDF-4 (variable ``responses`` in the labelled layout; ``attrs`` as the file's
    global attributes: strings and numbers). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = recording.rename("responses").to_dataset()
    ds.attrs.update(attrs or {})
    ds.to_netcdf(path, engine="h5netcdf")
    return path
