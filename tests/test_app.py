"""The ``driftsim`` command end to end (DESIGN.md config keys and HDF5 layout): the default run, output
paths, skipping complete runs, sweeps with the basic, joblib and submitit launchers and their job
folders, a failing job that loses no other job's file, and drift decoding on MNIST 0/1 (SPEC §6.4). The
command itself is launched for the default run and one sweep; the other sweeps run in this process
through Hydra's sweeper and launchers, single jobs through ``app.run_config``."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

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
def test_default_run_writes_every_design_path(tmp_path):
    """The default run as a user launches it (its time is a benchmark, not asserted here)."""
    proc = driftsim(cwd=tmp_path)
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


def test_relative_out_skip_conflict_and_overwrite(tmp_path, monkeypatch, caplog, run_driftsim):
    monkeypatch.chdir(tmp_path)  # the launch directory
    caplog.set_level("INFO", logger="driftsim.app")
    out = tmp_path / "results" / "run.h5"
    assert run_driftsim("experiment=debug", "out=results/run.h5") == (out, True)
    assert store.is_complete(out)
    stamp = out.stat().st_mtime_ns
    assert run_driftsim("experiment=debug", "out=results/run.h5") == (out, False)
    assert "skipped" in caplog.text and out.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"another config \(differs in \['dynamics.T'.*overwrite=true"):
        run_driftsim("experiment=debug", "out=results/run.h5", "dynamics.T=0.1")
    run_driftsim("experiment=debug", "out=results/run.h5", "dynamics.T=0.1", "overwrite=true")
    assert store.read_run(out).config["dynamics"]["T"] == 0.1


SWEEP = ["experiment=debug", "mode=theory", "task=synthetic", "model.activation=relu,erf", "dynamics.T=0.2,0.4"]


@pytest.fixture
def sweep(hydra_sweep_runner):
    """``sweep(folder, *overrides)``: ``driftsim -m OVERRIDES hydra.sweep.dir=FOLDER`` in this process, through
    Hydra's own sweeper and launchers (hydra's pytest plugin); the folder is removed when the block ends."""
    def run(folder: Path, *overrides: str):
        return hydra_sweep_runner(calling_file=None, calling_module="driftsim.app", task_function=app.main,
                                  config_path="conf", config_name="config", overrides=list(overrides),
                                  temp_dir=folder)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sweep_writes_four_files_collects_and_resumes(tmp_path, sweep, launcher):
    folder, args = tmp_path / "sweep", [*SWEEP, f"hydra/launcher={launcher}"]
    with sweep(folder, *args):
        files = sorted(folder.rglob("driftsim.h5"))
        assert len(files) == 4 and all(store.is_complete(f) for f in files)
        table = sweeps.collect(folder)
        n = 8 + 1  # record.n_times of the debug preset, plus t = 0
        assert len(table) == 4 * 3 * n  # theory learn, theory drift, ntk learn
        assert {"model.activation", "dynamics.T"} <= set(table.columns)
        assert table.groupby(["file", "source", "phase", "t"]).size().eq(1).all()
        assert table.groupby(["model.activation", "dynamics.T"]).file.nunique().eq(1).all()
        stamps = [f.stat().st_mtime_ns for f in files]
        with sweep(folder, *args):  # a re-run finds every file complete and recomputes nothing
            assert [f.stat().st_mtime_ns for f in files] == stamps


def test_sweep_job_folders_are_named_by_their_overrides_and_collected(tmp_path, sweep):
    """hydra.sweep.subdir is driftsim.io.output.job_folder of the overrides (its odd cases: tests/test_writing.py)."""
    folder = tmp_path / "sweep"
    with sweep(folder, "experiment=debug", "seed=0,1", "task.classes=[4,9]", "task=digits"):
        names = sorted(p.parent.relative_to(folder).as_posix() for p in folder.rglob("driftsim.h5"))
        assert names == [f"experiment=debug,seed={s},task.classes=[4,9],task=digits" for s in (0, 1)]
        assert sorted(sweeps.collect(folder)["seed"].unique()) == [0, 1]


def test_a_failing_job_loses_no_other_jobs_file(tmp_path):
    sweep = tmp_path / "sweep"
    proc = driftsim("-m", "experiment=debug", "task.overlap=2.0,0.5", f"hydra.sweep.dir={sweep}",
                    cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "task.overlap=2.0 is not allowed" in proc.stdout + proc.stderr
    files = list(sweep.rglob("*.h5"))
    assert len(files) == 1 and store.read_run(files[0]).config["task"]["overlap"] == 0.5


@pytest.mark.slow
def test_both_mode_writes_theory_and_simulation(tmp_path, run_driftsim):
    path, _ = run_driftsim("experiment=debug", "mode=both", f"out={tmp_path / 'run.h5'}")
    with h5py.File(path) as h5:
        assert not [p for p in design_paths(("theory", "sim")) if p not in h5]
        assert h5["/sim/drift/f_train"].shape == (9, 8, 4)
        assert "/sim/activity/drift/train" in h5 and "/decode/sim/drift/population_fixed" in h5


@pytest.mark.slow
def test_debug_preset_runs_an_mnist_pair_in_seconds(tmp_path, run_driftsim):
    start = time.process_time()  # CPU seconds of all threads: what the run costs, whatever else the machine runs
    path, _ = run_driftsim("debug=fast", "task=mnist", "mode=both", f"out={tmp_path / 'run.h5'}")
    cpu = time.process_time() - start
    assert cpu < 60, f"debug=fast task=mnist mode=both took {cpu:.0f} CPU seconds"
    with h5py.File(path) as h5:
        assert not [p for p in design_paths(("theory", "sim")) if p not in h5]
        assert h5["/sim/drift/f_train"].shape == (9, 8, 100) and h5["/theory/learn/f_test"].shape == (9, 100)


@pytest.mark.slow
def test_drift_keeps_norm_information_for_relu_only(tmp_path, run_driftsim):
    """SPEC §6.4: on MNIST 0/1 (50 per class, global normalisation) relu's decorrelated limit still
    separates the classes; erf, and relu with equal input norms, fall to chance."""
    common = ["task=mnist", "task.classes=[0,1]", "task.n_per_class=50", "record.n_times=6", "overwrite=true",
              f"out={tmp_path / 'run.h5'}"]

    def drift_accuracy_limit(*overrides: str) -> float:
        path, _ = run_driftsim(*common, *overrides)
        return float(store.read_run(path)["/decode/theory/drift/accuracy_inf"])

    assert drift_accuracy_limit("model.activation=relu") > 0.8
    assert abs(drift_accuracy_limit("model.activation=erf") - 0.5) < 0.1
    assert abs(drift_accuracy_limit("task.normalize=per_example") - 0.5) < 0.1


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


def test_a_small_sparse_recording_is_written_with_nan_where_a_metric_is_undefined(tmp_path, run_driftsim):
    """Two noise-free relu cells are often both silent for a stimulus: the run is written, with NaN where a
    metric is undefined (that stimulus's similarities, the structure's stability, the geometry of trials that
    do not vary), instead of the whole run failing."""
    out = tmp_path / "small.h5"
    run_driftsim("experiment=debug", "observe.sessions=3", "observe.cells=2", "observe.noise=none", f"out={out}")
    with h5py.File(out) as h5:
        m = {k: v[()] for k, v in h5["/metrics/theory"].items()}
    assert np.isnan(m["similarity"]).any() and np.isfinite(m["similarity"]).any()
    assert np.isnan(m["participation_ratio"]).all()  # no trial noise: no variance within a stimulus
    assert np.isfinite(m["pv_correlation"]).all() and np.isfinite(m["decoder_retrained"]).all()


@pytest.mark.parametrize("k, defined", [(2, [0, 3]), (3, [0, 2, 3]), (4, [0, 1, 2, 3]), (8, [0, 1, 2, 3]),
                                        (20, [0, 1, 2, 3])])
def test_covariance_points_spread_over_the_training_set(tmp_path, run_driftsim, k, defined):
    """theory.covariance_points=k gives the variances of min(k, P) training points spread over the set: a k
    above P = 4 gives all four (it used to give fewer as k grew: 8 → points 0, 1; 20 → point 0)."""
    out = tmp_path / f"cov{k}.h5"
    run_driftsim("task=synthetic", "theory.covariance=true", f"theory.covariance_points={k}", "record.n_times=5",
                 f"out={out}")
    with h5py.File(out) as h5:
        var = h5["/theory/learn/var_train"][()]
    assert np.flatnonzero(~np.isnan(var[-1])).tolist() == defined
