"""Shared fixtures: float64 as torch's default dtype for the tests of the theory's numbers, and driftsim
configs composed and run in this process, as the ``driftsim`` command would (without its start-up)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from driftsim import app


@pytest.fixture
def float64():
    """torch's default dtype is float64 for the test, and what it was afterwards (modules use it through
    ``pytestmark = pytest.mark.usefixtures("float64")``)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="session")
def compose_config() -> Callable[..., DictConfig]:
    """``compose_config(*overrides)``: the config ``driftsim OVERRIDES`` composes (not yet validated)."""
    return _compose


@pytest.fixture(scope="session")
def run_driftsim() -> Callable[..., tuple[Path, bool]]:
    """``run_driftsim(*overrides)``: one job of ``driftsim OVERRIDES`` in this process (``app.run_config``);
    returns (run file, whether it was computed). Set ``out``: there is no Hydra output folder here."""
    return lambda *overrides: app.run_config(_compose(*overrides))
