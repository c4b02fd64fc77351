"""The ``driftsim`` command end to end (DESIGN.md config keys and HDF5 layout; issue "must show"): the
default run, output paths, skipping complete runs, sweeps with the basic, joblib and submitit launchers,
a failing job that loses no other job's file, and drift decoding on MNIST 0/1 (SPEC §6.4)."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from driftsim import app
from driftsim.analysis import sweeps
from driftsim.io import store

# DESIGN.md "HDF5 layout", written out independently of store.required_paths
DESIGN_TASK = ["/task/x_train", "/task/y_train", "/task/x_test", "/task/y_test"]
DESIGN_THEORY = ["/theory/learn/t", "/theory/learn/f_train", "/theory/learn/f_test", "/theory/learn/f_ntk_test",
                 "/theory/nngp/f_train", "/theory/nngp/f_test", "/theory/kernels/nngp", "/theory/kernels/ntk",
                 "/theory/drift/t", "/theory/drift/f_train", "/theory/drift/f_test", "/theory/drift/f_inf_train",
                 "/theory/drift/f_inf_test"]
DESIGN_SIM = [f"/sim/{p}/{k}" for p in ("learn", "drift") for k in ("t", "f_train", "f_test")]


def design_paths(sources: tuple[str, ...]) -> list[str]:
    paths = list(DESIGN_TASK)
    for s in sources:
        paths += DESIGN_THEORY if s == "theory" else DESIGN_SIM
        for p in ("learn", "drift"):
            paths += [f"/decode/{s}/{p}/accuracy", f"/hist/{s}/{p}/counts", f"/hist/{s}/{p}/edges"]
    return paths


def driftsim(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["driftsim", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def written(proc: subprocess.CompletedProcess) -> Path:
    return Path(re.search(r"wrote (\S+\.h5)", proc.stdout).group(1))


@pytest.mark.slow
def test_default_run_writes_every_design_path_within_a_minute(tmp_path):
    start = time.perf_counter()
    proc = driftsim(cwd=tmp_path)
    wall = time.perf_counter() - start
    assert wall < 60, f"the default run took {wall:.0f} s"
    path = written(proc)
    assert path.parent.parent.parent == tmp_path / "outputs" and path.name == "driftsim.h5"
    with h5py.File(path) as h5:
        missing = [p for p in design_paths(("theory",)) if p not in h5]
        assert not missing
        for key in ("schema", "driftsim_version", "config", "seed", "created"):
            assert key in h5.attrs
        assert h5.attrs["schema"] == "driftsim/1"
        assert {"name", "classes", "indices"} <= set(h5["/task"].attrs)
        n, P, Q = h5["/theory/learn/t"].shape[0], h5["/task/y_train"].shape[0], h5["/task/y_test"].shape[0]
        assert (n, P, Q) == (41, 100, 100)
        assert h5["/theory/learn/f_test"].shape == (n, Q) and h5["/theory/kernels/ntk"].shape == (P + Q, P + Q)
        assert h5["/hist/theory/drift/counts"].shape == (41, 2, 40)
    run = store.read_run(path)
    assert run.config["task"]["name"] == "mnist" and run.config["protocol"]["t0"] == 25_000


def test_relative_out_skip_conflict_and_overwrite(tmp_path):
    out = tmp_path / "results" / "run.h5"
    driftsim("experiment=debug", "out=results/run.h5", cwd=tmp_path)
    assert store.is_complete(out)
    stamp = out.stat().st_mtime_ns
    again = driftsim("experiment=debug", "out=results/run.h5", cwd=tmp_path)
    assert "skipped" in again.stdout and out.stat().st_mtime_ns == stamp
    other = driftsim("experiment=debug", "out=results/run.h5", "dynamics.T=0.1", cwd=tmp_path, check=False)
    assert other.returncode == 2
    assert "another config (differs in ['dynamics.T'" in other.stderr and "overwrite=true" in other.stderr
    driftsim("experiment=debug", "out=results/run.h5", "dynamics.T=0.1", "overwrite=true", cwd=tmp_path)
    assert store.read_run(out).config["dynamics"]["T"] == 0.1


SWEEP = ["experiment=debug", "mode=theory", "task=synthetic", "model.activation=relu,erf", "dynamics.T=0.2,0.4"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sweep_writes_four_files_collects_and_resumes(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    args = ["-m", *SWEEP, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"]
    driftsim(*args, cwd=tmp_path)
    files = sorted(sweep.rglob("driftsim.h5"))
    assert len(files) == 4 and all(store.is_complete(f) for f in files)
    table = sweeps.collect(sweep)
    n = 8 + 1  # record.n_times of the debug preset, plus t = 0
    assert len(table) == 4 * 3 * n  # theory learn, theory drift, ntk learn
    assert {"model.activation", "dynamics.T"} <= set(table.columns)
    assert table.groupby(["file", "source", "phase", "t"]).size().eq(1).all()
    assert table.groupby(["model.activation", "dynamics.T"]).file.nunique().eq(1).all()
    stamps = [f.stat().st_mtime_ns for f in files]
    driftsim(*args, cwd=tmp_path)  # a re-run finds every file complete and recomputes nothing
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_failing_job_loses_no_other_jobs_file(tmp_path):
    sweep = tmp_path / "sweep"
    proc = driftsim("-m", "experiment=debug", "task.overlap=2.0,0.5", f"hydra.sweep.dir={sweep}",
                    cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "task.overlap=2.0 is not allowed" in proc.stdout + proc.stderr
    files = list(sweep.rglob("*.h5"))
    assert len(files) == 1 and store.read_run(files[0]).config["task"]["overlap"] == 0.5


@pytest.mark.slow
def test_both_mode_writes_theory_and_simulation(tmp_path):
    pytest.importorskip("driftsim.langevin")
    proc = driftsim("experiment=debug", "mode=both", cwd=tmp_path)
    path = written(proc)
    with h5py.File(path) as h5:
        assert not [p for p in design_paths(("theory", "sim")) if p not in h5]
        assert h5["/sim/drift/f_train"].shape == (9, 8, 4)
        assert "/sim/activity/drift/train" in h5 and "/decode/sim/drift/population_fixed" in h5


def drift_accuracy_limit(tmp_path: Path, *overrides: str) -> float:
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    path = app.run(OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True), tmp_path / "run.h5")
    return float(store.read_run(path)["/decode/theory/drift/accuracy_inf"])


@pytest.mark.slow
def test_drift_keeps_norm_information_for_relu_only(tmp_path):
    """SPEC §6.4: on MNIST 0/1 (50 per class, global normalisation) relu's decorrelated limit still
    separates the classes; erf, and relu with equal input norms, fall to chance."""
    common = ["task=mnist", "task.classes=[0,1]", "task.n_per_class=50", "record.n_times=6"]
    assert drift_accuracy_limit(tmp_path, *common, "model.activation=relu") > 0.8
    assert abs(drift_accuracy_limit(tmp_path, *common, "model.activation=erf") - 0.5) < 0.1
    assert abs(drift_accuracy_limit(tmp_path, *common, "task.normalize=per_example") - 0.5) < 0.1


# DESIGN.md "Drift metrics and recordings", written out independently of store.required_paths
DESIGN_OBSERVE = [f"/{g}/{s}/{k}" for s in ("theory", "sim") for g, keys in
                  (("observe", ("t", "responses")),
                   ("metrics", ("pv_correlation", "rate_correlation", "tuning_correlation", "rsa_stability",
                                "decoder_fixed", "decoder_retrained"))) for k in keys]
DESIGN_POPULATION = [f"/theory/drift/population/{k}" for k in ("pv_correlation", "similarity", "decoder_fixed")]


def test_observe_writes_recordings_metrics_and_the_population_theory(tmp_path):
    S, A, C, R = 4, 2, 40, 3
    proc = driftsim("experiment=debug", "mode=both", "task=digits", "task.n_per_class=6", "task.n_test=6",
                    f"observe.sessions={S}", f"observe.networks={A}", f"observe.cells={C}", f"observe.trials={R}",
                    "observe.turnover=0.05", cwd=tmp_path)
    assert "observed sim: PV correlation" in proc.stderr + proc.stdout
    path = written(proc)
    X = 12 + 6
    with h5py.File(path) as h5:
        assert not [p for p in DESIGN_OBSERVE + DESIGN_POPULATION if p not in h5]
        for s in ("theory", "sim"):
            np.testing.assert_allclose(h5[f"/observe/{s}/t"][()], np.linspace(0, 125, S))  # t_drift = 25/γ = 125
            assert h5[f"/observe/{s}/responses"].shape == (S, A, C, X, R)
            assert h5[f"/metrics/{s}/pv_correlation"].shape == (A, S, S)
            assert h5[f"/metrics/{s}/decoder_fixed"].shape == (A, S)
            cells = h5[f"/observe/{s}/cells"][()]
            assert ((cells[1:] != cells[:-1]).sum(-1) == 2).all()  # round(0.05 · 40) = 2 slots per session
        pv = h5["/theory/drift/population/pv_correlation"][()]
        np.testing.assert_allclose(np.diag(pv), 1.0)
        assert (np.diff(pv[0]) < 0).all()  # the population decorrelates over the drift
        assert h5["/theory/drift/population/similarity"].shape == (S, X, X)
    assert store.read_run(path, recordings=True)["/observe/sim/responses"].dtype == np.int32  # Poisson counts
