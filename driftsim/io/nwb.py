"""Recordings as NWB files (Neurodata Without Borders; pynwb, the optional extra ``driftsim[nwb]``).

A recording is the labelled array of driftsim.analysis.metrics: dims (session, cell, stimulus[, trial])
with the session times as coordinate ``time``. One NWB file holds one subject (an observed network)::

    subject       Subject: subject_id, species NCBITaxon_32630 ("synthetic construct"), sex "U", age
    epochs        one per session: start_time = the session's time; column ``session``
    trials        one row per (session, trial, stimulus): start_time, stop_time, ``stimulus`` (id),
                  ``label`` (class of the stimulus, when known), ``session``, ``repeat`` (trial index)
    acquisition   ``responses``: TimeSeries [trials, cells], time first, one sample per trial at its
                  start; ``cells``: table whose ids are the cells' ids, one row per column of responses
    notes         what the file is, and the settings that made it (NWB keeps them out of the data)

Times in the file are seconds; a session's time is written as it is (a model time unit as one second).

:func:`read_nwb` reads any file with a trials table that has ``stimulus`` and ``session`` columns and a
response series (a TimeSeries with time first), a lab's as well as these: the response of a trial is the
mean of the series' samples in [start_time, stop_time); sessions of several files are joined by their
cells' ids (``cells`` table, or a ``cell_id`` column of the ROI table a series refers to).
"""
from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .store import PathLike

__all__ = ["SPECIES", "read_nwb", "require_pynwb", "write_nwb"]

SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"  # NCBI taxonomy: "synthetic construct"


def require_pynwb():
    """The pynwb module, or an ImportError saying how to install the extra."""
    try:
        import pynwb
    except ImportError as e:
        raise ImportError("NWB files need pynwb, an optional extra of driftsim: pip install 'driftsim[nwb]' "
                          "(pynwb, nwbinspector)") from e
    return pynwb


def _trial_edges(time: np.ndarray, per_session: int) -> np.ndarray:
    """[S, per_session + 1] trial boundaries: each session's trials back to back in the first half of the
    gap to the next session (the whole unit interval for a single session)."""
    gap = np.diff(time).min() if len(time) > 1 else 2.0
    return time[:, None] + np.arange(per_session + 1) * (gap / (2 * per_session))


def write_nwb(recording: xr.DataArray, path: PathLike, *, subject_id: str, session_start_time: datetime.datetime,
              notes: str, description: str, unit: str = "a.u.", identifier: str | None = None) -> Path:
    """Write one subject's recording as an NWB file (layout in the module docstring).

    Parameters
    ----------
    recording : xarray.DataArray
        (session, cell, stimulus[, trial]) with coordinate ``time`` [S] (seconds in the file), optional
        ``label`` [X] along stimulus and ``cell`` / ``stimulus`` ids (integers).
    path : the file to write.
    subject_id, session_start_time, notes, description
        NWB metadata: the subject's id, the reference time (timezone-aware), free-text notes and the
        session description.
    unit : the responses' unit (e.g. "counts").
    identifier : the file's unique id (default: a random UUID).

    Returns
    -------
    The path written.
    """
    pynwb = require_pynwb()
    from hdmf.common import DynamicTable
    from pynwb.epoch import TimeIntervals
    from pynwb.file import Subject

    r = recording.transpose("session", "cell", "stimulus", *(["trial"] if "trial" in recording.dims else []))
    values = r.values if "trial" in r.dims else r.values[..., None]  # [S, C, X, R]
    S, C, X, R = values.shape
    time = np.asarray(r["time"].values, dtype=np.float64)
    stimuli = np.asarray(r["stimulus"].values) if "stimulus" in r.coords else np.arange(X)
    cells = np.asarray(r["cell"].values) if "cell" in r.coords else np.arange(C)
    edges = _trial_edges(time, R * X)  # trial k of a session: repeat k // X, stimulus k % X
    k = np.arange(R * X)
    trials = pd.DataFrame({"start_time": edges[:, :-1].ravel(), "stop_time": edges[:, 1:].ravel(),
                           "stimulus": np.tile(stimuli[k % X], S), "session": np.repeat(np.arange(S), R * X),
                           "repeat": np.tile(k // X, S)})
    described = {"stimulus": "id of the stimulus shown", "session": "session index (see epochs)",
                 "repeat": "index of the trial among those of its stimulus in the session"}
    if "label" in r.coords:
        trials.insert(3, "label", np.tile(np.asarray(r["label"].values)[k % X], S))
        described["label"] = "class label of the stimulus"
    epochs = pd.DataFrame({"start_time": edges[:, 0], "stop_time": edges[:, -1],
                           "tags": [[f"session {s}"] for s in range(S)], "session": np.arange(S)})

    nwb = pynwb.NWBFile(
        session_description=description, identifier=identifier or str(uuid.uuid4()),
        session_start_time=session_start_time, notes=notes,
        experiment_description="In silico recording: responses of hidden units of a simulated wide network "
                               "over sessions of representational drift (driftsim).",
        keywords=["representational drift", "in silico", "driftsim"],
        subject=Subject(subject_id=subject_id, species=SPECIES, sex="U", age="P0D",
                        description="a simulated network (in silico); it has no age, P0D stands in"),
        trials=TimeIntervals.from_dataframe(trials, name="trials", table_description="one row per trial",
                                            column_descriptions=described),
        epochs=TimeIntervals.from_dataframe(epochs, name="epochs", table_description="one epoch per session",
                                            column_descriptions={"session": "session index"}))
    data = values.transpose(0, 3, 2, 1).reshape(S * R * X, C)  # rows in the trials' order
    nwb.add_acquisition(pynwb.TimeSeries(
        name="responses", data=data, unit=unit, timestamps=trials["start_time"].to_numpy(),
        description="response of each recorded cell (columns, see 'cells') in each trial (rows, one sample "
                    "at the trial's start)"))
    nwb.add_acquisition(DynamicTable(name="cells", description="the recorded cells, one row per column of "
                                     "'responses'; ids are the cells' ids", id=[int(c) for c in cells]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


# ------------------------------------------------------------------------------------------------ reading

def _series(nwb, name: str | None, where: str):
    """The response series: the one named ``name``, or the only TimeSeries with time-first 1-D/2-D data,
    or the one named 'responses' among several."""
    import pynwb

    found = {obj.name: obj for obj in nwb.objects.values()
             if isinstance(obj, pynwb.TimeSeries) and obj.data is not None and np.ndim(obj.data) in (1, 2)}
    if name is not None:
        if name not in found:
            raise ValueError(f"{where}: no response series named {name!r}; its series: {sorted(found)}")
        return found[name]
    if len(found) == 1:
        return next(iter(found.values()))
    if "responses" in found:
        return found["responses"]
    raise ValueError(f"{where}: " + (f"several response series {sorted(found)}; name one (series=...)" if found
                     else "no response series (a TimeSeries [time, cells]) in acquisition or processing"))


def _cell_ids(nwb, series, n: int, where: str) -> np.ndarray | None:
    """Ids of the series' columns: the ROI table's ``cell_id`` column for an ROI series, or a ``cells``
    table with one row per column next to it; None when the file names none."""
    rois = getattr(series, "rois", None)
    if rois is not None:
        table = rois.table
        if "cell_id" in table.colnames:
            return np.asarray(table["cell_id"].data[:])[np.asarray(rois.data[:])]
        return None
    parent = series.parent
    cells = parent.get("cells") if hasattr(parent, "get") else None
    if cells is None and hasattr(parent, "acquisition"):
        cells = parent.acquisition.get("cells")
    if cells is None:
        return None
    ids = np.asarray(cells.id.data[:])
    if len(ids) != n:
        raise ValueError(f"{where}: table 'cells' has {len(ids)} rows but series {series.name!r} has {n} columns")
    return ids


def _trial_responses(series, trials: pd.DataFrame, where: str) -> np.ndarray:
    """[trials, cells]: the mean of the series' samples within each trial's [start_time, stop_time)."""
    data = np.asarray(series.data[:], dtype=np.float64)
    data = data[:, None] if data.ndim == 1 else data
    stamps = (np.asarray(series.timestamps[:]) if series.timestamps is not None
              else series.starting_time + np.arange(len(data)) / series.rate)
    if len(stamps) != len(data):
        raise ValueError(f"{where}: series {series.name!r} has {len(stamps)} timestamps for {len(data)} samples; "
                         "its first axis must be time")
    order = np.argsort(stamps, kind="stable")
    stamps, data = stamps[order], data[order]
    lo = np.searchsorted(stamps, trials["start_time"].to_numpy(), side="left")
    hi = np.searchsorted(stamps, trials["stop_time"].to_numpy(), side="left")
    empty = np.flatnonzero(hi <= lo)
    if len(empty):
        raise ValueError(f"{where}: {len(empty)} trials have no sample of series {series.name!r} between their "
                         f"start and stop times (first: trial {trials.index[empty[0]]})")
    return np.stack([data[a:b].mean(0) for a, b in zip(lo, hi)])


def _read_one(path: Path, series: str | None) -> dict:
    pynwb = require_pynwb()
    where = str(path)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        if nwb.trials is None:
            raise ValueError(f"{where}: no trials table; a recording needs one, with columns 'stimulus' and "
                             "'session' (NWBFile.add_trial_column)")
        trials = nwb.trials.to_dataframe()
        missing = [c for c in ("stimulus", "session") if c not in trials]
        if missing:
            raise ValueError(f"{where}: the trials table has no column {missing} (it has "
                             f"{[c for c in trials if c not in ('start_time', 'stop_time')]}); a recording needs "
                             "'stimulus' and 'session'")
        ts = _series(nwb, series, where)
        responses = _trial_responses(ts, trials, where)
        cells = _cell_ids(nwb, ts, responses.shape[1], where)
        starts = {}
        if nwb.epochs is not None and "session" in nwb.epochs.colnames:
            ep = nwb.epochs.to_dataframe()
            starts = ep.groupby("session")["start_time"].min().to_dict()
    return {"trials": trials, "responses": responses, "cells": cells, "epochs": starts, "where": where}


def _join_cells(parts: list[dict]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The cells recorded in every file and, per file, the columns that hold them."""
    counts = [p["responses"].shape[1] for p in parts]
    if any(p["cells"] is None for p in parts):
        if len(set(counts)) > 1:
            raise ValueError("sessions have different numbers of cells "
                             f"({dict(zip([p['where'] for p in parts], counts))}) and the files name no cell ids "
                             "to match them (a 'cells' table, or a 'cell_id' column of the ROI table)")
        return np.arange(counts[0]), [np.arange(counts[0])] * len(parts)  # the same cells, in the same order
    common = [c for c in parts[0]["cells"] if all(c in set(p["cells"]) for p in parts[1:])]
    if len(common) < 2:
        raise ValueError(f"the files share {len(common)} cell ids; the drift metrics need at least 2 cells "
                         "recorded in every session")
    columns = [pd.Index(p["cells"]).get_indexer(common) for p in parts]
    return np.asarray(common), columns


def read_nwb(paths: list[Path], series: str | None = None) -> xr.DataArray:
    """One recording from NWB files (sessions may be spread over files; layout in the module docstring).

    Returns a DataArray (session, cell, stimulus, trial) with coordinates ``time`` (seconds: the start of
    the session's epoch, or of its first trial), ``stimulus``, ``cell``, ``label`` (when the trials have
    one) and ``session`` ids; cells not recorded in every session are left out.
    """
    parts = [_read_one(Path(p), series) for p in paths]
    owner: dict = {}
    for part in parts:
        for s in part["trials"]["session"].unique().tolist():
            if owner.setdefault(s, part["where"]) != part["where"]:
                raise ValueError(f"session {s!r} is in {owner[s]} and in {part['where']}; give every session "
                                 "its own id in the trials' 'session' column")
    cells, columns = _join_cells(parts)
    rows = []
    for part, cols in zip(parts, columns):
        t = part["trials"].assign(_file=part["where"])
        t["_time"] = t["session"].map(part["epochs"]) if part["epochs"] else np.nan
        t["_time"] = t["_time"].fillna(t.groupby("session")["start_time"].transform("min"))
        rows.append((t, part["responses"][:, cols]))
    trials = pd.concat([t for t, _ in rows], ignore_index=True)
    values = np.concatenate([v for _, v in rows])
    if "repeat" not in trials:
        trials["repeat"] = trials.groupby(["session", "stimulus"]).cumcount()
    per = trials.groupby(["session", "stimulus"]).size()
    if per.nunique() != 1:
        raise ValueError(f"stimuli have different numbers of trials per session ({per.min()} to {per.max()}, "
                         f"first short one: session, stimulus = {per.idxmin()}); the layout needs the same number")
    sessions = trials.groupby("session")["_time"].first().sort_values()
    stimuli = np.sort(trials["stimulus"].unique())
    shape = (len(sessions), len(stimuli), int(per.iloc[0]))
    index = (pd.Index(sessions.index).get_indexer(trials["session"]), np.searchsorted(stimuli, trials["stimulus"]),
             trials["repeat"].to_numpy().astype(int))
    if (index[2] >= shape[2]).any():
        raise ValueError(f"the trials' 'repeat' column runs past the {shape[2]} trials each stimulus has")
    out = np.full(shape + (len(cells),), np.nan)
    out[index] = values
    coords = {"session": sessions.index.to_numpy(), "time": ("session", sessions.to_numpy(dtype=np.float64)),
              "cell": cells, "stimulus": stimuli}
    if "label" in trials:
        label = trials.groupby("stimulus")["label"].agg(lambda v: v.iloc[0] if v.nunique() == 1 else np.nan)
        if label.isna().any():
            raise ValueError(f"stimulus {label.index[label.isna()][0]} has trials with different labels")
        coords["label"] = ("stimulus", label.loc[stimuli].to_numpy())
    da = xr.DataArray(out.transpose(0, 3, 1, 2), dims=("session", "cell", "stimulus", "trial"), coords=coords,
                      name="responses")
    da["time"].attrs["units"] = "s"
    return da
