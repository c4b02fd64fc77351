"""The public facade of ``driftsim/__init__.py``: its names are the functions of the subpackages, and
importing it loads neither Hydra nor the config classes (the domain code takes plain arguments)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import driftsim
from driftsim.analysis.sweeps import collect
from driftsim.io.store import read_run
from driftsim.prior import Prior
from driftsim.sim.simulate import simulate
from driftsim.tasks import make_task
from driftsim.theory.covariance import predictor_covariance
from driftsim.theory.mean import solve
from driftsim.times import record_times

FACADE = {"solve": solve, "predictor_covariance": predictor_covariance, "simulate": simulate, "Prior": Prior,
          "record_times": record_times, "make_task": make_task, "read_run": read_run, "collect": collect}


def test_facade_names_the_subpackages_functions():
    assert sorted(driftsim.__all__) == sorted([*FACADE, "__version__"])
    for name, obj in FACADE.items():
        assert getattr(driftsim, name) is obj, name
    pyproject = (Path(driftsim.__file__).parents[1] / "pyproject.toml").read_text()
    assert driftsim.__version__ == re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)


def test_importing_driftsim_loads_neither_hydra_nor_the_configs():
    code = ("import sys, driftsim; driftsim.solve, driftsim.simulate, driftsim.read_run; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'hydra' or m == 'driftsim.config'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
