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
"""
from __future__ import annotations

import re

import h5py
import numpy as np

__all__ = ["AXES", "axes_of", "label_axes"]

PHASE = r"(?P<p>learn|drift)"
SOURCE = r"(?P<s>theory|sim)"

# (path pattern, names of the axes). "t" is the group's own time coordinate.
AXES: list[tuple[str, tuple[str, ...]]] = [
    (r"/task/x_train", ("train_point", "input")),
    (r"/task/y_train", ("train_point",)),
    (r"/task/x_test", ("test_point", "input")),
    (r"/task/y_test", ("test_point",)),
    (rf"/{SOURCE}/{PHASE}/t", ("t",)),
    (rf"/theory/{PHASE}/(f|f_ntk|var)_train", ("t", "train_point")),
    (rf"/theory/{PHASE}/(f|f_ntk)_test", ("t", "test_point")),
    (rf"/theory/{PHASE}/cov_test", ("t", "test_point", "test_point2")),
    (r"/theory/drift/f_inf_train", ("train_point",)),
    (r"/theory/drift/f_inf_test", ("test_point",)),
    (r"/theory/(nngp|ntk)/f_train", ("train_point",)),
    (r"/theory/(nngp|ntk)/f_test", ("test_point",)),
    (r"/theory/kernels/(nngp|ntk)", ("point", "point2")),
    (rf"/sim/{PHASE}/f_train", ("t", "network", "train_point")),
    (rf"/sim/{PHASE}/f_test", ("t", "network", "test_point")),
    (rf"/sim/activity/{PHASE}/train", ("t", "network", "train_point", "unit")),
    (rf"/sim/activity/{PHASE}/test", ("t", "network", "test_point", "unit")),
    (rf"/decode/{SOURCE}/{PHASE}/accuracy_inf", ()),
    (rf"/decode/{SOURCE}/{PHASE}/[^/]+", ("t",)),
    (rf"/hist/{SOURCE}/{PHASE}/counts", ("t", "class", "bin")),
    (rf"/hist/{SOURCE}/{PHASE}/edges", ("edge",)),
]
_COMPILED = [(re.compile(pattern), names) for pattern, names in AXES]


def axes_of(path: str) -> tuple[tuple[str, ...], str | None] | None:
    """The axis names of the dataset at ``path`` and where its time coordinate lives (None: no time
    axis, or the group's own ``t``); None for a path the layout does not know."""
    for pattern, names in _COMPILED:
        m = pattern.fullmatch(path)
        if m:
            groups = {"s": "sim", **m.groupdict()}  # the activity groups' times are the simulation's
            own = path.rsplit("/", 1)[0] + "/t"
            times = f"/{groups['s']}/{groups['p']}/t" if "t" in names else None
            return names, None if times == own else times
    return None


def _index_scale(h5: h5py.File, name: str, size: int) -> h5py.Dataset:
    """The root coordinate ``name`` = 0..size−1, created on first use."""
    if name not in h5:
        h5.create_dataset(name, data=np.arange(size, dtype=np.int64)).make_scale(name)
    scale = h5[name]
    if scale.shape != (size,):
        raise ValueError(f"axis {name!r} has length {scale.shape[0]} in one dataset and {size} in another")
    return scale


def _time_scale(h5: h5py.File, group: h5py.Group, source: str | None) -> h5py.Dataset:
    """The group's coordinate ``t``: its own dataset, or a copy of ``source`` (another group's times)."""
    if "t" not in group:
        group.create_dataset("t", data=h5[source][()])
    t = group["t"]
    if not t.is_scale:
        t.make_scale("t")
    return t


def label_axes(h5: h5py.File) -> None:
    """Attach a dimension scale to every axis of every dataset whose path :data:`AXES` names.

    Datasets the table does not name are left as they are (netCDF readers then give their axes
    anonymous names); the store's tests check that a run file has none.
    """
    datasets: list[h5py.Dataset] = []
    h5.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    for ds in datasets:
        found = axes_of(ds.name)
        if found is None:
            continue
        names, times = found
        if ds.name.rsplit("/", 1)[1] == "t":  # a time axis is its own coordinate
            _time_scale(h5, ds.parent, None)
            continue
        if len(names) != ds.ndim:
            raise ValueError(f"{ds.name} has shape {ds.shape} but its axes are named {names}")
        for axis, name in enumerate(names):
            scale = (_time_scale(h5, ds.parent, times) if name == "t"
                     else _index_scale(h5, name, ds.shape[axis]))
            ds.dims[axis].attach_scale(scale)
