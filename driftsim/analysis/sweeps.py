"""Sweeps: gather many run files (a Hydra multirun folder) into one tidy pandas table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import pandas as pd

from ..io.store import PathLike, Run, read_run

__all__ = ["collect", "flat_config", "run_files"]


def run_files(sources: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """The run files of ``sources``: files as given, folders searched for ``*.h5`` (a multirun folder);
    FileNotFoundError when there are none."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    files = []
    for item in map(Path, items):
        files += sorted(item.rglob("*.h5")) if item.is_dir() else [item]
    if not files:
        raise FileNotFoundError(f"no driftsim run files (*.h5) in {[str(i) for i in items]}")
    return files


def flat_config(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"dynamics.T": 0.001, ...}; lists become tuples (comparable, hashable)."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flat_config(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = tuple(v) if isinstance(v, list) else v
    return flat


def _trajectories(run: Run):
    """(source, phase, t, f_train [n,E,P], f_test [n,E,Q], decode group) per stored trajectory; E = 1 for
    the theory's mean predictor. Source ``ntk`` is the NTK theory on the learning run's times."""
    for source in run.sources:
        for phase in run.phases:
            g = f"/{source}/{phase}"
            f_train, f_test = run[f"{g}/f_train"], run[f"{g}/f_test"]
            if source == "theory":
                f_train, f_test = f_train[:, None], f_test[:, None]
            yield source, phase, run[f"{g}/t"], f_train, f_test, f"/decode/{source}/{phase}"
    if "theory" in run.sources and "/theory/learn/f_ntk_train" in run:
        yield ("ntk", "learn", run["/theory/learn/t"], run["/theory/learn/f_ntk_train"][:, None],
               run["/theory/learn/f_ntk_test"][:, None], None)


def _headed(head: dict, columns: dict) -> pd.DataFrame:
    """A block of rows: ``columns`` (arrays) after the run's constant ``head`` columns (tuples kept whole)."""
    df = pd.DataFrame(columns)
    for i, (k, v) in enumerate(head.items()):
        df.insert(i, k, [v] * len(df))
    return df


def collect(sources: Union[PathLike, Iterable[PathLike]], keys: Optional[list[str]] = None,
            points: bool = False) -> pd.DataFrame:
    """Gather run files (files, or folders searched recursively for ``*.h5``) into one tidy table.

    Columns: ``file``; the config keys (dotted, e.g. ``dynamics.T``) given in ``keys``, by default those
    whose values differ between the files (a sweep's swept keys); ``source`` (theory, ntk, sim),
    ``phase`` (learn, drift), ``t`` (as stored: since the start, or since the freeze) and ``time``
    (since the start: t0 + t in the drift phase). With ``points=False`` one row per run × source × phase
    × time, with the mean predictor f̄ (theory; simulation: the ensemble mean) summarised as
    ``train_mse`` and ``test_mse`` (mean of (f̄ − y)²), ``test_margin`` (mean of y·f̄: on the synthetic
    task, Q = 1, the test predictor signed by its label), ``test_acc`` (sign(f̄) = y), and the decoders'
    ``accuracy`` and ``accuracy_population`` (NaN where not defined). With ``points=True`` one row per
    run × source × phase × time × point: ``split`` (train, test), ``point``, ``y``, ``f`` (mean
    predictor) and ``f_sd`` (spread over the simulated networks; 0 for theory).
    """
    runs = [read_run(f) for f in run_files(sources)]
    flat = [flat_config(r.config) for r in runs]
    if keys is None:
        all_keys = sorted(set().union(*flat))
        keys = [k for k in all_keys if len({repr(f.get(k)) for f in flat}) > 1]
    blocks = []
    for run, cfg in zip(runs, flat):
        y = {"train": run["/task/y_train"], "test": run["/task/y_test"]}
        for source, phase, t, f_train, f_test, dec in _trajectories(run):
            time = t + (run.attrs[f"/{source}/drift"]["t0"] if phase == "drift" else 0.0)
            head = {"file": str(run.path), **{k: cfg.get(k) for k in keys}, "source": source, "phase": phase}
            if points:
                for split, f in (("train", f_train), ("test", f_test)):
                    n, _, npts = f.shape
                    blocks.append(_headed(head, {
                        "t": np.repeat(t, npts), "time": np.repeat(time, npts), "split": split,
                        "point": np.tile(np.arange(npts), n), "y": np.tile(y[split], n),
                        "f": f.mean(axis=1).ravel(), "f_sd": f.std(axis=1).ravel()}))
                continue
            mean_train, mean_test = f_train.mean(axis=1), f_test.mean(axis=1)  # [n, P], [n, Q]

            def decoded(name):
                key = f"{dec}/{name}"
                return run[key] if dec is not None and key in run else np.full(len(t), np.nan)

            blocks.append(_headed(head, {
                "t": t, "time": time,
                "train_mse": ((mean_train - y["train"]) ** 2).mean(axis=1),
                "test_mse": ((mean_test - y["test"]) ** 2).mean(axis=1),
                "test_margin": (mean_test * y["test"]).mean(axis=1),
                "test_acc": (np.sign(mean_test) == y["test"]).mean(axis=1),
                "accuracy": decoded("accuracy"), "accuracy_population": decoded("accuracy_population")}))
    return pd.concat(blocks, ignore_index=True)
