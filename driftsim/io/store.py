"""The HDF5 run file, schema ``driftsim/1`` (DESIGN.md "HDF5 layout"): write atomically, read, validate.
A sweep's files are gathered into one table by ``driftsim.analysis.sweeps.collect``.

One file per run. P training points, Q test points, N0 input dimension, E networks, n and m recorded
times of the learning and drift phases (t = 0 included), B histogram bins, U recorded hidden units.
Times are in the units of SPEC.md §1.4; drift times are times since the freeze, t − t0.
Entries marked (+) extend DESIGN.md's list (additions only; the contract's paths are unchanged)::

    /                          attrs: schema = "driftsim/1", driftsim_version, config (resolved YAML of
                               the run's Hydra config), seed, created (ISO 8601, UTC),
                               versions (+, JSON: python, numpy, torch, h5py, and the caller's additions:
                               the app adds its config library's)
    /task/x_train [P,N0], y_train [P], x_test [Q,N0], y_test [Q]
                               attrs: name, classes, indices (training examples' indices in the source
                               set), test_indices (+), source (+, where the data came from)
    -- mode theory or both --
    /theory                    attrs: grid_size (+, Volterra grid points)
    /theory/learn/t [n], f_train [n,P], f_test [n,Q], f_ntk_test [n,Q], f_ntk_train (+) [n,P]
    /theory/nngp/f_train [P], f_test [Q]     NNGP equilibrium, posterior mean with noise variance T
    /theory/ntk/f_train (+) [P], f_test (+) [Q]   NTK equilibrium k_ntk K_ntk⁻¹ Y
    /theory/kernels/nngp [P+Q,P+Q], ntk [P+Q,P+Q]   training points first
    /theory/drift/t [m], f_train [m,P], f_test [m,Q], f_inf_train [P], f_inf_test [Q]; attrs: t0
    /theory/<phase>/var_train (+) [n or m, P], cov_test (+) [n or m, Q, Q]   optional (theory.covariance):
                               the predictor's variance / covariance over the ensemble (SPEC §10);
                               NaN for points left out (theory.covariance_points)
    /decode/theory/<phase>/accuracy [n or m]; drift also accuracy_inf (+) [] (decorrelated limit);
                               accuracy_network (+) [n or m] with the covariance (one network's outputs)
    /hist/theory/<phase>/counts [n or m, 2, B], edges [B+1]
    -- mode sim or both --
    /sim                       attrs: info (+, JSON: scheme, dt, steps, wall time ...)
    /sim/learn/t [n], f_train [n,E,P], f_test [n,E,Q]
    /sim/drift/t [m], f_train [m,E,P], f_test [m,E,Q]; attrs: t0
    /sim/activity/<phase>/train [n or m, E, P, U], test [n or m, E, Q, U]   when sim.activity_units > 0
    /decode/sim/<phase>/accuracy [n or m], accuracy_population (+) [n or m];
                               drift with activity: population_fixed (+) [m], population_retrained (+) [m]
    /hist/sim/<phase>/counts [n or m, 2, B], edges [B+1]

    -- observe.sessions > 0 (DESIGN.md "Drift metrics and recordings"; S sessions, A networks, C cells,
       X = P + Q stimuli, training first, R trials) --
    /observe/<source>/t [S]    drift time of each session (since the freeze)
    /observe/<source>/responses [S,A,C,X,R]   recorded responses: float32, int32 counts for poisson noise
    /observe/<source>/cells (+) [S,A,C]   the unit each cell slot recorded (turnover replaces some)
    /metrics/<source>/<name> [A,S,S] or [A,S]   analysis.metrics.summary per network: pv_correlation,
                               rate_correlation, tuning_correlation, rsa_stability [A,S,S]; decoder_fixed,
                               decoder_retrained [A,S]; (+) tuning_correlation_median, decoder_relative_cross,
                               drift_index, participation_ratio, drift_in_variational_fraction,
                               subspace_overlap where the data allow; decoder_ridge_fixed [A,S], the ridge
                               decoder of /theory/drift/population on the noise-free activity of session 0's cells;
                               similarity [A,S,X,X] (float32), stimulus × stimulus correlation over cells
    /theory/drift/population/pv_correlation [S,S], similarity [S,X,X], decoder_fixed [S]   (mode theory/both)
                               infinite population; (+) t [S], rate_correlation [S,S], decoder_output [S,Q],
                               decoder_output_inf [Q], decoder_fixed_inf []; attrs: layer, ridge

<source> is ``theory`` (units sampled from the infinite-width Gaussian process) or ``sim`` for /observe and
/metrics, ``theory`` or ``sim`` elsewhere. <phase> is ``learn``, and ``drift`` when protocol.t0 is set. Histogram
counts are per class, y = +1 (the
first of task.classes) then y = −1; driftsim.analysis.decode says what every accuracy measures. Arrays with a
time axis are chunked along it (one time of more than 256 KiB split along its next axis); arrays are
gzip-compressed with the shuffle filter and a fletcher32 checksum.

Every axis is named by an HDF5 dimension scale (driftsim.io.axes): time axes by their group's ``t``
(decode and hist groups hold a copy (+) of their phase's ``t``), index axes by root coordinates (+)
``train_point``, ``test_point``, ``point``, ``network``, ... = 0..n−1, so that ``xarray.open_dataset(path,
group=..., engine="h5netcdf")`` gives labelled arrays (driftsim.io.labelled).

A simulation's records may be h5py datasets (streamed by the app to its scratch file, output.scratch): they are
copied a block of chunks at a time. A run is written through driftsim.io.output: to ``.<name>.partial`` in the
target's folder, under a lock
that admits one writer per target, and renamed onto the final name (``os.replace``) only once complete and
synced, so a crash, a kill or Ctrl-C never leaves a half-written file under the final name (the next run
removes a killed run's leftover). A file already at the target is replaced only when it is a driftsim run
(:func:`check_replaceable`): never a user's own file.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import h5py
import numpy as np
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import __version__
from .axes import label_axes
from .output import OutputError, atomic, checkpoint

__all__ = ["SCHEMA", "StoreError", "Run", "required_paths", "write_run", "stage_responses", "read_run", "check_run",
           "is_complete", "is_run_file", "check_replaceable"]

SCHEMA = "driftsim/1"
_CHUNK_BYTES = 1 << 18  # ~256 KiB chunks: whole small arrays, a few time slices of large ones

# attributes by which HDF5 dimension scales (driftsim.io.axes) label axes: bookkeeping, not the run's
_SCALE_ATTRS = frozenset({"CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST", "_Netcdf4Dimid"})

PathLike = Union[str, os.PathLike]
SOURCES = {"theory": ("theory",), "sim": ("sim",), "both": ("theory", "sim")}  # what each mode computes


class StoreError(ValueError):
    """A file that is not a complete driftsim run of schema ``driftsim/1``."""


# the observation's paths of DESIGN.md that every run with observe.sessions > 0 holds
OBSERVE_PATHS = ("t", "responses")
METRIC_PATHS = ("pv_correlation", "rate_correlation", "tuning_correlation", "decoder_fixed", "decoder_retrained")
POPULATION_PATHS = ("pv_correlation", "similarity", "decoder_fixed")


def required_paths(mode: str, drift: bool, observe: bool = False) -> list[str]:
    """The datasets a complete run of ``mode`` (theory, sim, both) holds, with or without a drift phase and
    recordings (observe.sessions > 0)."""
    paths = [f"/task/{k}" for k in ("x_train", "y_train", "x_test", "y_test")]
    if observe:
        for source in SOURCES[mode]:
            paths += [f"/observe/{source}/{k}" for k in OBSERVE_PATHS]
            paths += [f"/metrics/{source}/{k}" for k in METRIC_PATHS]
        if "theory" in SOURCES[mode]:
            paths += [f"/theory/drift/population/{k}" for k in POPULATION_PATHS]
    phases = ("learn", "drift") if drift else ("learn",)
    sources = SOURCES[mode]
    if "theory" in sources:
        paths += [f"/theory/learn/{k}" for k in ("t", "f_train", "f_test", "f_ntk_test")]
        paths += ["/theory/nngp/f_train", "/theory/nngp/f_test", "/theory/kernels/nngp", "/theory/kernels/ntk"]
        paths += ["/theory/ntk/f_train", "/theory/ntk/f_test"]  # (+): every writer has them; plots and measures read them
        if drift:
            paths += [f"/theory/drift/{k}" for k in ("t", "f_train", "f_test", "f_inf_train", "f_inf_test")]
    if "sim" in sources:
        paths += [f"/sim/{p}/{k}" for p in phases for k in ("t", "f_train", "f_test")]
    for source in sources:
        for p in phases:
            paths += [f"/decode/{source}/{p}/accuracy", f"/hist/{source}/{p}/counts", f"/hist/{source}/{p}/edges"]
    return paths


# ---------------------------------------------------------------------------------------------- writing

def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _put(group: h5py.Group, name: str, value, timed: bool = False) -> None:
    """Store one array; ``timed``: its first axis is time, chunk along it. An h5py dataset (a streamed
    simulation's records) is copied a block of chunks at a time, never read whole; one already stored as the
    run file stores it (:func:`stage_responses`) is copied as it is, its compressed chunks unread."""
    checkpoint()  # a Ctrl-C during the write stops it here, between datasets
    streamed = isinstance(value, h5py.Dataset)
    a = value if streamed else _numpy(value)
    if a.size == 0 or a.ndim == 0:  # nothing to chunk or compress
        group.create_dataset(name, data=a[()] if streamed else a)
        return
    chunks = True  # h5py's guess for arrays without a time axis
    if timed:
        row = a.dtype.itemsize * a.size // a.shape[0]  # bytes of one time
        if row <= _CHUNK_BYTES or a.ndim == 1:
            chunks = (int(np.clip(_CHUNK_BYTES // row, 1, a.shape[0])),) + a.shape[1:]
        else:  # one time is large (a big ensemble): split its next axis too
            chunks = (1, int(np.clip(_CHUNK_BYTES * a.shape[1] // row, 1, a.shape[1]))) + a.shape[2:]
    # fletcher32: a checksum per chunk, so that a corrupted byte fails the read instead of changing a number;
    # gzip level 1: the recordings' counts write 1.5x faster than at level 4 for a file 7 % larger
    options = dict(chunks=chunks, compression="gzip", compression_opts=1, shuffle=True, fletcher32=True)
    if not streamed:
        group.create_dataset(name, data=a, **options)
        return
    if chunks is not True and a.chunks == chunks and all(getattr(a, k) == v for k, v in options.items()
                                                          if k != "chunks"):
        group.copy(a, name)  # H5Ocopy: the chunks as they are
        return
    d = group.create_dataset(name, shape=a.shape, dtype=a.dtype, **options)
    step = d.chunks[0]
    for lo in range(0, a.shape[0], step):
        checkpoint()
        d[lo:lo + step] = a[lo:lo + step]


def _versions(extra: dict[str, str]) -> str:
    import torch
    return json.dumps({"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                       "h5py": h5py.__version__, **extra})


def _write_task(h5: h5py.File, task) -> None:
    g = h5.create_group("task")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        _put(g, k, getattr(task, k))
    g.attrs["name"] = task.name
    g.attrs["classes"] = np.asarray(task.classes, dtype=np.int64)
    g.attrs["indices"] = np.asarray(task.train_indices, dtype=np.int64)
    g.attrs["test_indices"] = np.asarray(task.test_indices, dtype=np.int64)
    g.attrs["source"] = str(task.source)


def _write_theory(h5: h5py.File, theory) -> None:
    g = h5.create_group("theory")
    g.attrs["grid_size"] = int(theory.grid_size)
    learn = g.create_group("learn")
    for k in ("t", "f_train", "f_test", "f_ntk_train", "f_ntk_test"):
        _put(learn, k, getattr(theory.learn, k), timed=True)
    _put_covariance(learn, theory.learn)
    for name, eq in (("nngp", theory.nngp), ("ntk", theory.ntk)):
        _put(g.create_group(name), "f_train", eq.f_train)
        _put(g[name], "f_test", eq.f_test)
    _put(g.create_group("kernels"), "nngp", theory.kernel_nngp)
    _put(g["kernels"], "ntk", theory.kernel_ntk)
    if theory.drift is not None:
        d = g.create_group("drift")
        d.attrs["t0"] = float(theory.drift.t0)
        for k in ("t", "f_train", "f_test"):
            _put(d, k, getattr(theory.drift, k), timed=True)
        _put(d, "f_inf_train", theory.drift.f_inf_train)
        _put(d, "f_inf_test", theory.drift.f_inf_test)
        _put_covariance(d, theory.drift)


def _put_covariance(group: h5py.Group, phase) -> None:
    """The optional SPEC §10 arrays of a theory phase."""
    if phase.var_train is not None:
        _put(group, "var_train", phase.var_train, timed=True)
        _put(group, "cov_test", phase.cov_test, timed=True)


def _write_sim(h5: h5py.File, sim) -> None:
    g = h5.create_group("sim")
    g.attrs["info"] = json.dumps(sim.info, default=str)
    for name in ("learn", "drift"):
        phase = getattr(sim, name)
        if phase is None:
            continue
        p = g.create_group(name)
        if name == "drift":
            p.attrs["t0"] = float(sim.t0)
        for k in ("t", "f_train", "f_test"):
            _put(p, k, getattr(phase, k), timed=True)
        if phase.activity_train is not None:
            a = g.require_group("activity").create_group(name)
            _put(a, "train", phase.activity_train, timed=True)
            _put(a, "test", phase.activity_test, timed=True)


def _write_decoding(h5: h5py.File, decoding: dict) -> None:
    for (source, phase), dec in decoding.items():
        d = h5.require_group(f"decode/{source}/{phase}")
        for f in fields(dec):
            value = getattr(dec, f.name)
            if f.name not in ("counts", "edges") and value is not None:
                _put(d, f.name, np.asarray(value, dtype=np.float64), timed=True)
        h = h5.require_group(f"hist/{source}/{phase}")
        _put(h, "counts", dec.counts, timed=True)
        _put(h, "edges", dec.edges)


def _response_dtype(r: np.ndarray) -> type:
    """int32 for counts (integers within its range: Poisson trials), float32 for other responses."""
    if r.dtype == np.int32:
        return np.int32
    integral = np.issubdtype(r.dtype, np.integer) or bool(np.all(r == np.round(r)))
    return np.int32 if integral and -2 ** 31 <= r.min() and r.max() < 2 ** 31 else np.float32


def stage_responses(group: h5py.Group, responses: np.ndarray) -> h5py.Dataset:
    """Write recorded responses [S, A, C, X, R] to ``group/responses`` of another HDF5 file (a run's scratch
    file) exactly as the run file stores them, and return that dataset: :func:`write_run` then copies its
    compressed chunks as they are. The app stages its recordings while their metrics are computed, so their
    compression (h5py releases the GIL) overlaps that work."""
    r = np.asarray(responses)
    _put(group, "responses", r.astype(_response_dtype(r), copy=False), timed=True)
    return group["responses"]


def _write_observed(h5: h5py.File, observed: dict, population) -> None:
    for source, o in observed.items():
        g = h5.require_group(f"observe/{source}")
        _put(g, "t", np.asarray(o.t, dtype=np.float64))
        r = o.responses
        if not isinstance(r, h5py.Dataset):  # else staged (stage_responses): copied as it is
            r = np.asarray(r)
            r = r.astype(_response_dtype(r), copy=False)
        _put(g, "responses", r, timed=True)
        _put(g, "cells", np.asarray(o.cells, dtype=np.int64), timed=True)
        m = h5.require_group(f"metrics/{source}")
        for name, value in o.metrics.items():
            _put(m, name, np.asarray(value, dtype=np.float32 if name == "similarity" else np.float64))
    if population is not None:
        p = h5.require_group("theory/drift/population")
        p.attrs["layer"], p.attrs["ridge"] = int(population.layer), float(population.ridge)
        for k in ("t", "pv_correlation", "rate_correlation", "similarity", "decoder_output", "decoder_fixed",
                  "decoder_output_inf"):
            _put(p, k, getattr(population, k))
        _put(p, "decoder_fixed_inf", np.float64(population.decoder_fixed_inf))


def write_run(path: PathLike, *, config: str, seed: int, task, theory=None, sim=None,
              decoding: Optional[dict] = None, versions: Optional[dict[str, str]] = None,
              observed: Optional[dict] = None, population=None) -> Path:
    """Write one run atomically to ``path`` (schema driftsim/1, layout in the module docstring).

    config: the resolved YAML of the run's config; task: a ``driftsim.tasks.Task``; theory: a
    ``TheoryResult``; sim: a ``SimResult``; decoding: {(source, phase): ``decode.PhaseDecoding``};
    versions: {library: version} recorded besides python, numpy, torch and h5py. Returns the final path.
    observed: {source: ``results.Observed``}; population: a ``results.PopulationTheory``.

    Raises OutputError when ``path`` cannot be written (nothing is then left behind), another process
    writes it, or a file there is not a driftsim run; Ctrl-C removes the partial file
    (``output.Interrupted``).
    """
    final = Path(path)
    with atomic(final, before_replace=check_replaceable) as partial, h5py.File(partial, "w") as h5:
        h5.attrs["schema"] = SCHEMA
        h5.attrs["driftsim_version"] = __version__
        h5.attrs["config"] = config
        h5.attrs["seed"] = int(seed)
        h5.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        h5.attrs["versions"] = _versions(versions or {})
        _write_task(h5, task)
        if theory is not None:
            _write_theory(h5, theory)
        if sim is not None:
            _write_sim(h5, sim)
        _write_decoding(h5, decoding or {})
        _write_observed(h5, observed or {}, population)
        label_axes(h5)
    return final


# ---------------------------------------------------------------------------------------------- reading

@dataclass
class Run:
    """A validated run file in memory. ``run["/theory/learn/f_test"]`` is a numpy array; ``attrs`` maps
    a path ("/" for the root) to its attributes; ``config`` is the run's config as nested dicts."""
    path: Path
    config: dict
    arrays: dict
    attrs: dict

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays["/" + key.lstrip("/")]

    def __contains__(self, key: str) -> bool:
        return "/" + key.lstrip("/") in self.arrays

    @property
    def phases(self) -> tuple[str, ...]:
        return ("learn", "drift") if self.config["protocol"]["t0"] is not None else ("learn",)

    @property
    def sources(self) -> tuple[str, ...]:
        return SOURCES[self.config["mode"]]


def _check_header(h5: h5py.File, path: Path) -> dict:
    """The run's config after checking the root attributes, the config and the layout (no array is read)."""
    schema = h5.attrs.get("schema")
    if schema is None:
        raise StoreError(f"{path} is an HDF5 file but not a driftsim run: it has no root attribute 'schema' "
                         f"(expected {SCHEMA!r}); it holds {sorted(h5)[:8]}")
    if not isinstance(schema, str) or schema != SCHEMA:
        raise StoreError(f"{path} has schema {schema!r}; driftsim {__version__} reads schema {SCHEMA!r} only")
    config = _parse_config(h5.attrs.get("config"), path)
    mode, drift = config["mode"], config["protocol"]["t0"] is not None
    observe = (config.get("observe") or {}).get("sessions", 0) > 0
    try:
        missing = [p for p in required_paths(mode, drift, observe) if p not in h5]
        if missing:
            raise StoreError(f"{path} is not a complete driftsim run (mode={mode}): missing {missing}")
        _check_layout(h5, path, mode, drift)
        _check_covariance(h5, path)
        _check_observed(h5, path)
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a layout the checks above did not foresee
        raise StoreError(f"{path}: damaged run file ({type(e).__name__}: {e})") from e
    return config


# sections every run's config has, and what its readers (plots, collect) take from them
_CONFIG_SECTIONS = ("model", "dynamics", "protocol")


def _parse_config(text, path: Path) -> dict:
    """The root attribute 'config' as nested dicts, refusing YAML aliases (a driftsim config has none; nested
    aliases expand exponentially, a "billion laughs" of a few hundred bytes) and configs that are not a run's."""
    def damaged(what: str) -> StoreError:
        return StoreError(f"{path}: root attribute 'config' is not the config of a driftsim run: {what}")

    if not isinstance(text, str):
        raise damaged("missing" if text is None else f"a {type(text).__name__}, not YAML text")
    try:
        # the events of the parser, before any alias is expanded: linear in the text
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise damaged("it uses YAML aliases (*name), which driftsim never writes")
        config = OmegaConf.to_container(OmegaConf.create(text))
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        raise damaged(f"unparsable ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(config, dict):
        raise damaged(f"a {type(config).__name__}, not a mapping of config keys")
    absent = [k for k in _CONFIG_SECTIONS if not isinstance(config.get(k), dict)]
    if absent:
        raise damaged(f"the section(s) {absent} are missing or not mappings")
    if config.get("mode") not in SOURCES:
        raise damaged(f"mode={config.get('mode')!r}, not one of {list(SOURCES)}")
    t0 = config["protocol"].get("t0")
    if t0 is not None and not (isinstance(t0, (int, float)) and np.isfinite(t0)):
        raise damaged(f"protocol.t0={t0!r}, not unset or a finite time")
    return config


def _layout(mode: str, drift: bool) -> dict[str, tuple]:
    """The shape of every required dataset of DESIGN.md's layout in the symbols of the module docstring
    (P, Q, N0, n, m, E, B; "P+Q" and "B+1" derived), for a run of ``mode`` with or without a drift phase."""
    shapes = {"/task/x_train": ("P", "N0"), "/task/y_train": ("P",), "/task/x_test": ("Q", "N0"),
              "/task/y_test": ("Q",)}
    phases = {"learn": "n", "drift": "m"} if drift else {"learn": "n"}
    if "theory" in SOURCES[mode]:
        shapes.update({"/theory/learn/t": ("n",), "/theory/learn/f_train": ("n", "P"), "/theory/learn/f_test": ("n", "Q"),
                       "/theory/learn/f_ntk_test": ("n", "Q"), "/theory/nngp/f_train": ("P",),
                       "/theory/nngp/f_test": ("Q",), "/theory/ntk/f_train": ("P",), "/theory/ntk/f_test": ("Q",),
                       "/theory/kernels/nngp": ("P+Q", "P+Q"),
                       "/theory/kernels/ntk": ("P+Q", "P+Q")})
        if drift:
            shapes.update({"/theory/drift/t": ("m",), "/theory/drift/f_train": ("m", "P"),
                           "/theory/drift/f_test": ("m", "Q"), "/theory/drift/f_inf_train": ("P",),
                           "/theory/drift/f_inf_test": ("Q",)})
    for phase, n in phases.items():
        if "sim" in SOURCES[mode]:
            shapes.update({f"/sim/{phase}/t": (n,), f"/sim/{phase}/f_train": (n, "E", "P"),
                           f"/sim/{phase}/f_test": (n, "E", "Q")})
        for source in SOURCES[mode]:
            shapes.update({f"/decode/{source}/{phase}/accuracy": (n,), f"/hist/{source}/{phase}/counts": (n, 2, "B"),
                           f"/hist/{source}/{phase}/edges": ("B+1",)})
    return shapes


def _check_layout(h5: h5py.File, path: Path, mode: str, drift: bool) -> None:
    """Every required dataset is a dataset of real numbers (floating point; histogram counts integer too) of
    the shape of :func:`_layout`, its symbols taking one value across the file; the drift groups carry t0."""
    sizes: dict[str, int] = {}
    for name, dims in _layout(mode, drift).items():
        d = h5[name]
        if not isinstance(d, h5py.Dataset):
            raise StoreError(f"{path}: {name} is a {type(d).__name__}, expected a dataset")
        kinds = "iuf" if name.endswith("/counts") else "f"
        if d.dtype.kind not in kinds:
            raise StoreError(f"{path}: {name} has dtype {d.dtype}; expected {'integer or ' * (kinds != 'f')}"
                             "floating-point numbers")
        want = []
        for dim, got in zip(dims, d.shape + (None,) * len(dims)):
            if isinstance(dim, str) and "+" in dim:
                a, b = dim.split("+")
                dim = sizes[a] + (int(b) if b.isdigit() else sizes[b])
            elif isinstance(dim, str):
                dim = sizes.setdefault(dim, got)
            want.append(dim)
        if d.shape != tuple(want):
            shown = ", ".join(f"{s}={w}" if isinstance(s, str) else str(w) for s, w in zip(dims, want))
            raise StoreError(f"{path}: {name} has shape {list(d.shape)}; expected [{shown}] to match the rest of the run")
    for source in SOURCES[mode] if drift else ():
        t0 = h5[f"{source}/drift"].attrs.get("t0")
        if t0 is None or np.ndim(t0) != 0 or not np.isreal(t0) or not np.isfinite(t0):
            raise StoreError(f"{path}: /{source}/drift has attribute t0={t0!r}; expected the freeze time, a finite "
                             "number")


def _check_observed(h5: h5py.File, path: Path) -> None:
    """Where present, /observe/<source>, /metrics/<source> and /theory/drift/population agree on S, A, C, X."""
    X = h5["task/x_train"].shape[0] + h5["task/x_test"].shape[0]

    def fail(what: str, got, want) -> None:
        raise StoreError(f"{path}: {what} has shape {got}; expected {want}")

    for source in ("theory", "sim"):
        g = h5.get(f"observe/{source}")
        if g is None:
            continue
        S = g["t"].shape[0]
        r = g["responses"].shape
        if len(r) != 5 or r[0] != S or r[3] != X:
            fail(f"/observe/{source}/responses", r, f"[S={S}, A, C, X={X}, R]")
        if "cells" in g and g["cells"].shape != r[:3]:
            fail(f"/observe/{source}/cells", g["cells"].shape, r[:3])
        A = r[1]
        for name, d in (h5.get(f"metrics/{source}") or {}).items():
            want = {2: (A, S), 3: (A, S, S), 4: (A, S, X, X)}.get(d.ndim)
            if d.shape != want or (d.ndim == 4) != (name == "similarity"):
                fail(f"/metrics/{source}/{name}", d.shape, f"[A={A}, S={S}] or [A, S, S] (similarity [A, S, X, X])")
    p = h5.get("theory/drift/population")
    if p is not None:
        S = p["pv_correlation"].shape[0]
        want = {"pv_correlation": (S, S), "similarity": (S, X, X), "decoder_fixed": (S,)}
        for name, shape in want.items():
            if p[name].shape != shape:
                fail(f"/theory/drift/population/{name}", p[name].shape, shape)


def _check_covariance(h5: h5py.File, path: Path) -> None:
    """The optional /theory/<phase>/var_train [n,P] and cov_test [n,Q,Q] come together, with those shapes."""
    for phase in ("learn", "drift"):
        g = h5.get(f"theory/{phase}")
        if g is None or ("var_train" not in g and "cov_test" not in g):
            continue
        n, p, q = g["t"].shape[0], g["f_train"].shape[1], g["f_test"].shape[1]
        want = {"var_train": (n, p), "cov_test": (n, q, q)}
        got = {k: g[k].shape if k in g else None for k in want}
        if got != want:
            raise StoreError(f"{path}: /theory/{phase} covariance arrays {got} do not match its times and "
                             f"points; expected {want}")


def _open(path: PathLike) -> tuple[h5py.File, Path]:
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a driftsim run file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such driftsim run file")
    try:
        hdf5 = h5py.is_hdf5(path)
    except OSError as e:  # permission denied, an I/O error
        raise StoreError(f"{path} cannot be read: {e}") from e
    if not hdf5:
        raise StoreError(f"{path} is not an HDF5 file (corrupt, truncated or another format); a driftsim run "
                         f"is an HDF5 file of schema {SCHEMA!r}")
    try:
        return h5py.File(path, "r"), path
    except OSError as e:
        raise StoreError(f"{path} cannot be opened as HDF5 (truncated or corrupt?): {e}") from e


# gzip (deflate) expands a stored byte into at most ~1032: a dataset declaring more than this is damaged
_MAX_EXPANSION = 1100
_UNCHECKED_BYTES = 1 << 20  # smaller datasets are read as they are


def _check_stored(d: h5py.Dataset, key: str, path: Path) -> None:
    """Refuse a dataset whose declared size its stored bytes cannot hold (a header claiming (1e11,) values in a
    small file), before reading allocates it."""
    declared = d.size * d.dtype.itemsize
    stored = d.id.get_storage_size()
    if declared > _UNCHECKED_BYTES and declared > _MAX_EXPANSION * stored:
        raise StoreError(f"{path}: {key} declares shape {list(d.shape)} of {d.dtype} ({declared / 1e9:.3g} GB) but "
                         f"the file stores {stored} bytes of it: damaged; not read")


def read_run(path: PathLike, activity: bool = False, recordings: bool = False) -> Run:
    """Read and validate a run file; hidden-activity snapshots (/sim/activity) only with ``activity=True``,
    recorded responses (/observe/<source>/responses) only with ``recordings=True``.

    Raises FileNotFoundError, or :class:`StoreError` for a file that is not HDF5, is truncated, is not a
    driftsim run, has another schema, lacks a path or attribute its mode requires, holds a dataset of another
    shape, dtype or kind than the layout's, a config that is not a run's (or uses YAML aliases), a dataset
    declaring more than the file stores, or data that fails its checksum or decompression.
    """
    h5, path = _open(path)
    with h5:
        config = _check_header(h5, path)
        arrays, attrs = {}, {"/": dict(h5.attrs)}

        def visit(name, obj):
            key = "/" + name
            own = {k: v for k, v in obj.attrs.items() if k not in _SCALE_ATTRS}
            if own:
                attrs[key] = own
            skipped = ((not activity and key.startswith("/sim/activity"))
                       or (not recordings and key.startswith("/observe/") and key.endswith("/responses")))
            if isinstance(obj, h5py.Dataset) and not skipped:
                _check_stored(obj, key, path)
                arrays[key] = obj[()]

        try:
            h5.visititems(visit)
        except (OSError, RuntimeError, KeyError) as e:
            raise StoreError(f"{path}: data cannot be read (truncated or corrupt?): {e}") from e
    return Run(path=path, config=config, arrays=arrays, attrs=attrs)


def check_run(path: PathLike) -> dict:
    """The config of the run at ``path`` after checking its header and required paths (no array is
    read); raises what :func:`read_run` raises for a file that is not a complete run."""
    h5, path = _open(path)
    with h5:
        return _check_header(h5, path)


def is_complete(path: PathLike) -> bool:
    """True when ``path`` is a readable driftsim/1 run holding every path its mode requires."""
    try:
        check_run(path)
        return True
    except (FileNotFoundError, StoreError):
        return False


def is_run_file(path: PathLike) -> bool:
    """True when ``path`` holds a driftsim run, complete or not: an HDF5 file whose root attribute
    ``schema`` names a driftsim schema, or an HDF5 file too damaged to open (truncated) whose header still
    holds the schema (written first, in the file's first kilobytes)."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get("schema", "")).startswith("driftsim/")
    except OSError:
        with open(path, "rb") as fh:
            return b"driftsim/" in fh.read(1 << 16)


def check_replaceable(path: PathLike) -> None:
    """Refuse (OutputError) to replace ``path`` when it exists and is not a driftsim run (:func:`is_run_file`):
    overwrite=true replaces runs and their remnants only, never a user's own file."""
    path = Path(path)
    if path.exists() and not is_run_file(path):
        kind = "an HDF5 file without a driftsim schema" if h5py.is_hdf5(path) else "not an HDF5 file"
        raise OutputError(f"not a driftsim run: {path} ({kind}); driftsim replaces only its own run files, "
                          "even with overwrite=true: move the file or choose another out")
