"""driftsim.plots and the ``driftsim-plot`` command (issue 5): every figure builds from a small run file
with theory and simulation, with labelled axes (units), log time axes, legends and the marks it promises
(NTK/NNGP equilibria, ±2 SE band, best early-stopping point, decorrelated limit, predicted density)."""
from __future__ import annotations

import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from scipy.optimize import brentq

from driftsim.analysis import measures, plots
from driftsim.io import store
from driftsim.plot_cli import main as plot_main


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    """A run of the debug preset (synthetic task, P = 4) with theory, a small ensemble and a drift phase."""
    out = tmp_path_factory.mktemp("plots") / "debug.h5"
    proc = subprocess.run(["driftsim", "experiment=debug", "mode=both", "dynamics.dt=0.4", f"out={out}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def run(run_file) -> store.Run:
    return store.read_run(run_file)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_trajectories(run):
    fig = plots.predictor_trajectories(run)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "time" in ax.get_xlabel() and "Langevin" in ax.get_xlabel()
    assert "label units" in ax.get_ylabel()
    texts = legend_texts(ax)
    for want in ("theory mean", "NTK theory", "NNGP equilibrium", "NTK equilibrium", "simulation mean ± 2 SE"):
        assert any(want in t for t in texts), (want, texts)
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the ±2 SE band
    nngp = run["/theory/nngp/f_test"][0]
    assert any(len(line.get_ydata()) and np.allclose(line.get_ydata(), nngp) for line in ax.get_lines())
    plt.close(fig)


def test_error_marks_best_stopping(run):
    fig = plots.generalisation_error(run)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "MSE" in ax.get_ylabel()
    err = measures.prediction_error(run["/theory/learn/f_test"], run["/task/y_test"])
    t = run["/theory/learn/t"]
    i = int(np.argmin(np.where(t > 0, err, np.inf)))
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and star[0].get_xdata()[0] == t[i] and star[0].get_ydata()[0] == err[i]
    assert any("best stopping" in s for s in legend_texts(ax))
    summary = measures.summary(run)
    assert summary["t_best"] == t[i] and summary["dynamics.T"] == run.config["dynamics"]["T"]
    plt.close(fig)


def test_histograms_side_by_side_with_predicted_density(run):
    times = [0.0, 5.0, 125.0]
    P = run["/task/y_train"].shape[0]
    means, variances = np.zeros((len(times), P)), np.ones((len(times), P))
    fig = plots.predictor_histograms(run, times=times, means=means, variances=variances)
    assert len(fig.axes) == 2 * len(times)  # rows theory, sim
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("theory") and titles[len(times)].startswith("sim")
    assert all("label units" in ax.get_xlabel() for ax in fig.axes)
    sim_axes = fig.axes[len(times):]
    assert all(any(line.get_label() == "predicted density" for line in ax.get_lines()) for ax in sim_axes)
    peak = max(line.get_ydata().max() for line in sim_axes[0].get_lines())
    assert peak == pytest.approx(1 / np.sqrt(2 * np.pi), rel=0.05)  # N(0, 1) drawn at its density
    plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        plots.predictor_histograms(run, times=times, means=means[:, :2], variances=variances[:, :2])


def test_drift_accuracy_with_decorrelated_limit(run):
    fig = plots.drift_accuracy(run)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "since the freeze" in ax.get_xlabel()
    assert "accuracy" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert any("decorrelated limit" in t for t in texts) and "chance" in texts
    acc_inf = float(run["/decode/theory/drift/accuracy_inf"])
    assert any(len(line.get_ydata()) and np.allclose(line.get_ydata(), acc_inf) for line in ax.get_lines())
    plt.close(fig)


def test_cli_writes_pngs(run_file, tmp_path, capsys):
    assert plot_main([str(run_file), "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == [f"debug_{n}.png" for n in ("drift_accuracy", "error", "histograms", "trajectories")]
    assert all(p.stat().st_size > 10_000 for p in tmp_path.glob("*.png"))
    assert str(tmp_path / "debug_error.png") in capsys.readouterr().out
    (tmp_path / "bad.h5").write_text("not hdf5")
    assert plot_main([str(tmp_path / "bad.h5")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    script = [e for e in entry_points(group="console_scripts") if e.name == "driftsim-plot"]
    assert [e.value for e in script] == ["driftsim.plot_cli:main"]


def test_measures_on_known_curves():
    t = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 400)])
    f = 1 - np.exp(-t)
    assert measures.crossing_time(t, f, 1 - np.exp(-1)) == pytest.approx(1.0, rel=1e-3)
    assert np.isnan(measures.crossing_time(t, f, 2.0))
    # rise to 1 at rate 1, then relax to 0.8 at rate 1e-2: 0.9 of the NTK value, then half the gap at ln 2 / 1e-2
    def g_of(s):
        return 0.8 + 0.2 * np.exp(-1e-2 * s) - np.exp(-s)
    g = g_of(t)
    t_grad, t_diff = measures.phase_times(t, g, 1.0, 0.8)
    assert t_grad == pytest.approx(brentq(lambda s: g_of(s) - 0.9, 1e-3, 10), rel=1e-3)
    assert t_diff == pytest.approx(np.log(2) / 1e-2, rel=1e-3)
    assert measures.overshoot(g, 0.8) == pytest.approx((g.max() - 0.8) / 0.8)
    assert measures.overshoot(f, 1.0) == 0.0
    assert measures.best_stopping(t, (g - 1) ** 2)[0] == pytest.approx(t[np.argmax(g)])


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory) -> store.Run:
    """The debug preset with recordings: 4 sessions of 3 networks, theory and simulation."""
    out = tmp_path_factory.mktemp("plots") / "observed.h5"
    proc = subprocess.run(["driftsim", "experiment=debug", "mode=both", "task=digits", "task.n_per_class=5",
                           "task.n_test=4", "observe.sessions=4", "observe.networks=3", "observe.cells=40",
                           f"out={out}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return store.read_run(out)


def test_recording_figures(observed_run):
    run = observed_run
    ax = plots.pv_elapsed(run).axes[0]
    texts = legend_texts(ax)
    for want in ("theory, infinite population", "theory-sampled recordings", "simulated recordings (±1 SE"):
        assert any(want in t for t in texts), (want, texts)
    theory = [line for line in ax.get_lines() if line.get_label().startswith("theory, infinite")][0]
    np.testing.assert_allclose(theory.get_ydata(), [np.mean(np.diagonal(run["/theory/drift/population/"
                               "pv_correlation"], k)) for k in range(4)])
    assert "elapsed" in ax.get_xlabel()
    fig = plots.similarity_matrices(run)
    assert len([a for a in fig.axes if a.images]) == 6  # theory, simulated, theory-sampled × first, last
    dec = plots.decoder_accuracy(run).axes[0]
    texts = legend_texts(dec)
    for want in ("simulated: fixed", "simulated: retrained", "theory-sampled: fixed", "infinite population",
                 "decorrelated limit", "chance"):
        assert any(want in t for t in texts), (want, texts)
    assert {"pv_elapsed", "similarity", "decoders"} <= set(plots.standard_figures(run))
    for fig in plt.get_fignums():
        plt.close(fig)


def test_recording_figures_need_recordings(run):
    with pytest.raises(ValueError, match="no recordings"):
        plots.pv_elapsed(run)
    assert "pv_elapsed" not in plots.standard_figures(run)
