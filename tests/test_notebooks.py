"""The analyses/ notebooks (issue 5) execute top to bottom on their small default computations and save
their figures as PNG into $DRIFTSIM_FIGURES."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
# each notebook and the figures it must write
NOTEBOOKS = {
    "time_scales": ["time_scales_trajectories.png", "time_scales_vs_T_sigma.png"],
    "trajectories": ["depth_activation_trajectories.png", "depth_activation_error.png"],
    "early_stopping": ["early_stopping_vs_ratio_depth.png"],
    "drift": ["drift_accuracy.png", "drift_histograms_mnist_0-1_relu.png", "drift_histograms_mnist_4-9_relu.png",
              "drift_histograms_mnist_0-1_erf.png"],
    "drift_metrics": ["drift_metrics_pv.png", "drift_metrics_similarity.png", "drift_metrics_decoders.png"],
}


def test_every_notebook_is_listed_and_committed_without_outputs():
    assert sorted(p.stem for p in ANALYSES.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(ANALYSES / f"{name}.ipynb", as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_and_saves_figures(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFTSIM_FIGURES", str(tmp_path / "figures"))
    monkeypatch.delenv("DRIFTSIM_CIFAR", raising=False)  # CIFAR-10 is skipped without data
    nb = nbformat.read(ANALYSES / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    written = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert written == sorted(NOTEBOOKS[name])
    assert all((tmp_path / "figures" / p).stat().st_size > 10_000 for p in written)
