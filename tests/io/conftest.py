"""A small run with recordings of both sources, shared by the exchange tests (computed once)."""
from __future__ import annotations

import pytest

from driftsim.app import compute_runs

OBSERVE = ["experiment=debug", "mode=both", "observe.sessions=4", "observe.networks=2", "observe.cells=20",
           "observe.trials=3"]


@pytest.fixture(scope="session")
def observed_run(tmp_path_factory):
    """The debug preset in mode both, drift phase and observe.sessions = 4 (2 networks, 20 cells, 3 trials,
    Poisson counts): a complete run file as the driftsim command writes it."""
    return compute_runs(tmp_path_factory.mktemp("observed"), {"run": OBSERVE})["run"].path
