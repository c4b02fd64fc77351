"""A run file's groups as labelled arrays (``xarray.Dataset``), through the HDF5 dimension scales that
the store writes (driftsim.io.axes): every array with named axes, each time axis with its times.

    open_group("run.h5", "/theory/learn")    Dataset: f_train (t, train_point), ... ; coordinate t
    read_datasets("run.h5")                  {"/": ..., "/task": ..., "/theory/learn": ..., ...}
"""
from __future__ import annotations

import h5py
import xarray as xr

from .store import PathLike, check_run

__all__ = ["open_group", "read_datasets"]


def open_group(path: PathLike, group: str = "/") -> xr.Dataset:
    """The datasets of one group of a run file, loaded into memory, as an ``xarray.Dataset``.

    Parameters
    ----------
    path : a driftsim run file (schema driftsim/1).
    group : the group's path, e.g. ``"/sim/drift"``; ``"/"`` holds the index coordinates.

    Returns
    -------
    xarray.Dataset with the group's arrays under their dataset names, their axes named as in
    driftsim.io.axes, and the group's attributes. Axes a file written before the dimension scales
    does not name come back as ``phony_dim_<k>``.
    """
    check_run(path)
    with h5py.File(path, "r") as h5:
        if not isinstance(h5.get(group), h5py.Group):
            raise KeyError(f"{path} has no group {group!r}; its groups: {_groups(h5)}")
    with xr.open_dataset(path, group=group, engine="h5netcdf", phony_dims="sort") as ds:
        return ds.load()


def _groups(h5: h5py.File) -> list[str]:
    """Paths of the groups that hold at least one dataset, root first."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and any(isinstance(v, h5py.Dataset) for v in obj.values()):
            found.append("/" + name)

    h5.visititems(visit)
    return ["/"] + found


def read_datasets(path: PathLike) -> dict[str, xr.Dataset]:
    """Every group of a run file that holds arrays, as {group path: :func:`open_group` of it}."""
    check_run(path)
    with h5py.File(path, "r") as h5:
        groups = _groups(h5)
    return {g: open_group(path, g) for g in groups}
