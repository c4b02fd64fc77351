"""A run's observed populations as files a recording lab opens: one NWB or netCDF file per observed
network and source, ``<run>_<source>_network<a>.nwb`` / ``.nc``.

NWB files (driftsim.io.nwb) carry the run's resolved config and driftsim's version in their notes and
in a sidecar ``<file>.yaml`` (NWB keeps simulation settings out of the data); netCDF files carry them as
global attributes. Session times are the drift times since the freeze, in model time units (written as
seconds in NWB).
"""
from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import h5py
import yaml

from .. import __version__
from .recordings import observed_sources, recording_from_run, write_netcdf
from .store import PathLike, check_run

__all__ = ["FORMATS", "export_run"]

FORMATS = {"nwb": ".nwb", "netcdf": ".nc"}


def _header(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {k: str(h5.attrs[k]) for k in ("config", "created", "driftsim_version")}


def export_run(path: PathLike, out: PathLike, to: str = "nwb", sources: list[str] | None = None) -> list[Path]:
    """Write every observed network of the run at ``path`` into folder ``out`` as ``to`` ("nwb" or
    "netcdf"), for ``sources`` (default: every source the run observed). Returns the files written."""
    if to not in FORMATS:
        raise ValueError(f"to={to!r} is not allowed; choose one of {sorted(FORMATS)}")
    path, out = Path(path), Path(out)
    config = check_run(path)
    observed = observed_sources(path)
    sources = observed if sources is None else sources
    if not observed:
        raise ValueError(f"{path} holds no observed population (/observe/<source>); run it with observe.sessions > 0")
    for s in sources:
        if s not in observed:
            raise ValueError(f"{path} holds no observed population of source {s!r}; it has {observed}")
    if to == "nwb":
        from .nwb import require_pynwb
        require_pynwb()  # before any file is written
    header = _header(path)
    noise = (config.get("observe") or {}).get("noise")
    written = []
    for source in sources:
        with h5py.File(path, "r") as h5:
            networks = h5[f"observe/{source}/responses"].shape[1]
        for a in range(networks):
            rec = recording_from_run(path, source, a)
            name = f"{path.stem}_{source}_network{a}"
            meta = {"driftsim_version": __version__, "run": str(path.resolve()), "source": source, "network": a,
                    "created": header["created"]}
            if to == "netcdf":
                written.append(write_netcdf(rec, out / f"{name}.nc", {**meta, "config": header["config"]}))
                continue
            from .nwb import write_nwb
            notes = (f"Written by driftsim {__version__} from the run file {path.name} (created "
                     f"{header['created']}, driftsim {header['driftsim_version']}): observed network {a} of source "
                     f"{source!r}. Session times are drift times since the readout was frozen, in the model's time "
                     f"units written as seconds. The run's resolved config:\n{header['config']}")
            file = write_nwb(rec, out / f"{name}.nwb", subject_id=f"{source}-network{a}",
                             session_start_time=datetime.datetime.fromisoformat(header["created"]), notes=notes,
                             description=f"driftsim {source} recording of network {a}: {rec.sizes['session']} "
                                         f"sessions of representational drift",
                             unit="counts" if noise == "poisson" else "a.u.",
                             identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"driftsim:{meta['run']}:"
                                                       f"{header['created']}:{source}:{a}")))
            sidecar = file.with_suffix(".yaml")
            sidecar.write_text(yaml.safe_dump({**meta, "config": yaml.safe_load(header["config"])}, sort_keys=False))
            written += [file, sidecar]
    return written
