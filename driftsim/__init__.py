"""driftsim: learning dynamics of wide networks from NTK to NNGP, and representational drift.

Theory (Avidan, Li & Sompolinsky, arXiv 2309.04522) and Langevin simulation; see SPEC.md and README.md.
The names below are the public entry points; the subpackages hold the rest (README, "Architecture").
"""
__version__ = "0.1.0"  # before the imports: io/store.py reads it

from .analysis.sweeps import collect
from .io.store import read_run
from .prior import Prior
from .sim.simulate import simulate
from .tasks import make_task
from .theory.covariance import predictor_covariance
from .theory.mean import solve
from .times import record_times

__all__ = ["__version__", "solve", "predictor_covariance", "simulate", "Prior", "record_times", "make_task",
           "read_run", "collect"]
