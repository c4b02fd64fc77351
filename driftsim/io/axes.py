"""Named axes of a run file as HDF5 dimension scales, so that netCDF readers (xarray through h5netcdf)
open every group of it as labelled arrays. Only scales and copies of time axes are added: the
layout's paths and arrays are unchanged (schema ``driftsim/1``).

- A phase group's time axis is its coordinate ``t`` (the stored times); the decode and hist groups of
  a phase get their own copy of the phase's ``t``, because netCDF looks a dimension up only in the
  group itself and its parents.
- Index axes are coordinate variables 0..n−1 at the root, which netCDF makes visible from every group:
  ``train_point`` [P], ``test_point`` [Q], ``point`` [P+Q] (training points first), ``input`` [N0],
  ``network`` [E], ``unit`` [U], ``class`` [2] (y = +1, then y = −1), ``bin`` [B], ``edge`` [B+1]. The
  second axis of a square array carries a ``2``: ``point2``, ``test_point2``. (No axis is named like a
  dataset: netCDF would take that dataset for the axis' coordinate.)
- Recordings (/observe/<source>, DESIGN.md "Drift metrics and recordings") and their metrics have the
  axes ``session`` [S], ``subject`` [A] (observed networks), ``cell`` [C], ``stimulus`` [X] (training
  points first), ``trial`` [R], with the sessions' drift times ``t`` as the coordinate along ``session``
  (CF ``coordinates`` attribute; /theory/drift/population holds its own ``t``; the metrics groups have
  the session index only, the sessions of /observe/<source>).

Calling :func:`label_axes` again labels only what is new.
"""
from __future__ import annotations

import re

import h5py
import numpy as np

__all__ = ["AXES", "axes_of", "label_axes"]

PHASE = r"(?P<p>learn|drift)"
SOURCE = r"(?P<s>theory|sim)"

# (path pattern, names of the axes, where the group's times come from when it has no ``t`` of its own);
# the first pattern that matches with as many names as the dataset has axes applies.
# Axis "t" is the group's time coordinate itself; axis "session" is an index with the group's ``t`` as
# its coordinate (the sessions' drift times).
AXES: list[tuple[str, tuple[str, ...], str | None]] = [
    (r"/task/x_train", ("train_point", "input"), None),
    (r"/task/y_train", ("train_point",), None),
    (r"/task/x_test", ("test_point", "input"), None),
    (r"/task/y_test", ("test_point",), None),
    (rf"/{SOURCE}/{PHASE}/t", ("t",), None),
    (rf"/theory/{PHASE}/(f|f_ntk|var)_train", ("t", "train_point"), None),
    (rf"/theory/{PHASE}/(f|f_ntk)_test", ("t", "test_point"), None),
    (rf"/theory/{PHASE}/cov_test", ("t", "test_point", "test_point2"), None),
    (r"/theory/drift/f_inf_train", ("train_point",), None),
    (r"/theory/drift/f_inf_test", ("test_point",), None),
    (r"/theory/(nngp|ntk)/f_train", ("train_point",), None),
    (r"/theory/(nngp|ntk)/f_test", ("test_point",), None),
    (r"/theory/kernels/(nngp|ntk)", ("point", "point2"), None),
    (rf"/sim/{PHASE}/f_train", ("t", "network", "train_point"), None),
    (rf"/sim/{PHASE}/f_test", ("t", "network", "test_point"), None),
    (rf"/sim/activity/{PHASE}/train", ("t", "network", "train_point", "unit"), "/sim/{p}/t"),
    (rf"/sim/activity/{PHASE}/test", ("t", "network", "test_point", "unit"), "/sim/{p}/t"),
    (rf"/decode/{SOURCE}/{PHASE}/accuracy_inf", (), None),
    (rf"/decode/{SOURCE}/{PHASE}/[^/]+", ("t",), "/{s}/{p}/t"),
    (rf"/hist/{SOURCE}/{PHASE}/counts", ("t", "class", "bin"), "/{s}/{p}/t"),
    (rf"/hist/{SOURCE}/{PHASE}/edges", ("edge",), None),
    (rf"/observe/{SOURCE}/t", ("session",), None),
    (rf"/observe/{SOURCE}/responses", ("session", "subject", "cell", "stimulus", "trial"), None),
    (rf"/observe/{SOURCE}/cells", ("session", "subject", "cell"), None),
    (rf"/metrics/{SOURCE}/[^/]+", ("subject", "session"), None),
    (rf"/metrics/{SOURCE}/[^/]+", ("subject", "session", "session2"), None),
    (rf"/metrics/{SOURCE}/[^/]+", ("subject", "session", "stimulus", "stimulus2"), None),
    (r"/theory/drift/population/t", ("session",), None),
    (r"/theory/drift/population/(pv|rate)_correlation", ("session", "session2"), None),
    (r"/theory/drift/population/similarity", ("session", "stimulus", "stimulus2"), None),
    (r"/theory/drift/population/decoder_fixed", ("session",), None),
    (r"/theory/drift/population/decoder_output", ("session", "test_point"), None),
    (r"/theory/drift/population/decoder_output_inf", ("test_point",), None),
    (r"/theory/drift/population/decoder_fixed_inf", (), None),
]
_COMPILED = [(re.compile(pattern), names, times) for pattern, names, times in AXES]


def axes_of(path: str, ndim: int) -> tuple[tuple[str, ...], str | None] | None:
    """The axis names of the ``ndim``-dimensional dataset at ``path`` and the path of the times its group
    copies when it has none (None: it needs none); None for a dataset the layout does not know."""
    for pattern, names, times in _COMPILED:
        m = pattern.fullmatch(path)
        if m and len(names) == ndim:
            return names, None if times is None else times.format(**m.groupdict())
    return None


def _index_scale(h5: h5py.File, name: str, size: int) -> h5py.Dataset | None:
    """The root coordinate ``name`` = 0..size−1, created on first use; None when another dataset gave the
    axis another length."""
    if name not in h5:
        h5.create_dataset(name, data=np.arange(size, dtype=np.int64)).make_scale(name)
    scale = h5[name]
    return scale if scale.shape == (size,) else None  # an inconsistent file: the reader's checks name it


def _group_times(h5: h5py.File, group: h5py.Group, source: str | None) -> h5py.Dataset | None:
    """The group's ``t``: its own dataset, or a copy of ``source`` (another group's times); None when
    it has none and ``source`` is not in the file."""
    if "t" not in group and source is not None and source in h5:
        group.create_dataset("t", data=h5[source][()])
    return group.get("t")


def _label_times(h5: h5py.File, t: h5py.Dataset, axis: str) -> None:
    """A group's ``t`` is the coordinate of its time axis, or rides on the session index."""
    if axis == "t" and not t.is_scale:
        t.make_scale("t")
    elif axis == "session" and not t.dims[0]:
        scale = _index_scale(h5, "session", t.shape[0])
        if scale is not None:
            t.dims[0].attach_scale(scale)


def label_axes(h5: h5py.File) -> None:
    """Attach a dimension scale to every axis of every dataset whose path :data:`AXES` names.

    Datasets the table does not name, and axes whose length contradicts another dataset's, are left as
    they are (netCDF readers then give them anonymous names); the store's tests check that a run file
    has none, and its reader refuses inconsistent shapes.
    """
    datasets: list[h5py.Dataset] = []
    h5.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    for ds in datasets:
        found = axes_of(ds.name, ds.ndim)
        if found is None:
            continue
        names, source = found
        timed = [a for a in names if a in ("t", "session")]
        t = _group_times(h5, ds.parent, source) if timed else None
        if t is not None:
            _label_times(h5, t, timed[0])
        if ds.name.rsplit("/", 1)[1] == "t" or "DIMENSION_LIST" in ds.attrs:  # a coordinate, or done
            continue
        for axis, name in enumerate(names):
            scale = t if name == "t" else _index_scale(h5, name, ds.shape[axis])
            if scale is not None:
                ds.dims[axis].attach_scale(scale)
        if "session" in names and t is not None:
            ds.attrs["coordinates"] = "t"  # CF: the sessions' times label the session axis
