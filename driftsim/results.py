"""Result objects that theory and simulation hand to decoding, storage and plots (DESIGN.md HDF5 layout).

Shapes: n recorded times, P training points, Q test points, E networks. Times of the drift phase are
times since the freeze, t − t0. Tensors are float64 for theory; simulations keep their dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from torch import Tensor

__all__ = ["TheoryLearn", "TheoryDrift", "Equilibrium", "TheoryResult", "SimPhase", "SimSessions", "SimResult",
           "Observed", "PopulationTheory"]


@dataclass
class TheoryLearn:
    """SPEC §5: mean predictor over the learning run, with the NTK theory (§5.2) on the same times."""
    t: Tensor  # [n]
    f_train: Tensor  # [n, P]
    f_test: Tensor  # [n, Q]
    f_ntk_train: Tensor  # [n, P]
    f_ntk_test: Tensor  # [n, Q]
    var_train: Optional[Tensor] = None  # [n, P] SPEC §10 variance over the ensemble (NaN: not computed)
    cov_test: Optional[Tensor] = None  # [n, Q, Q] SPEC §10 covariance over the ensemble


@dataclass
class Equilibrium:
    """SPEC §5.3: NNGP posterior mean with noise variance T (or any t → ∞ limit)."""
    f_train: Tensor  # [P]
    f_test: Tensor  # [Q]


@dataclass
class TheoryDrift:
    """SPEC §6: frozen-readout mean predictor after t0 and its decorrelated limit (§6.4)."""
    t0: float
    t: Tensor  # [m], time since the freeze
    f_train: Tensor  # [m, P]
    f_test: Tensor  # [m, Q]
    f_inf_train: Tensor  # [P]
    f_inf_test: Tensor  # [Q]
    var_train: Optional[Tensor] = None  # [m, P] SPEC §10, as in TheoryLearn
    cov_test: Optional[Tensor] = None  # [m, Q, Q]


@dataclass
class TheoryResult:
    learn: TheoryLearn
    nngp: Equilibrium
    ntk: Equilibrium  # NTK equilibrium k_ntk K_ntk⁻¹ Y
    kernel_nngp: Tensor  # [P+Q, P+Q], training points first
    kernel_ntk: Tensor  # [P+Q, P+Q]
    drift: Optional[TheoryDrift] = None
    grid_size: int = 0  # Volterra grid points used (diagnostic)
    fit_error: float = 0.0  # max error of the kernel expansion on validation lags (diagnostic)


@dataclass
class SimPhase:
    """Each network's predictor at the recorded times of one phase (SPEC §8): tensors, or the h5py datasets
    to which the app's simulation streamed them (``simulate(records=...)``; read them a time at a time)."""
    t: Tensor  # [n]; for the drift phase, time since the freeze
    f_train: Tensor  # [n, E, P]
    f_test: Tensor  # [n, E, Q]
    activity_train: Optional[Tensor] = None  # [n, E, P, units], last hidden layer φ(h_L), if recorded
    activity_test: Optional[Tensor] = None  # [n, E, Q, units]


@dataclass
class SimSessions:
    """Hidden activity at the sessions of the observation model (drift phase), for ``observe.py``."""
    t: Tensor  # [S], time since the freeze
    layer: int  # hidden layer 1..L
    activity: Tensor  # [S, A, U, X]: φ(h_layer) of the first U units of the first A networks, X = P + Q stimuli


@dataclass
class SimResult:
    learn: SimPhase
    drift: Optional[SimPhase] = None
    t0: Optional[float] = None
    info: dict = field(default_factory=dict)  # scheme, dt, steps, wall time ...
    sessions: Optional[SimSessions] = None


@dataclass
class Observed:
    """One source's recordings and their drift metrics (``/observe/<source>``, ``/metrics/<source>``): the
    responses as an array, or as the h5py dataset to which the app staged them (``store.stage_responses``)."""
    t: np.ndarray  # [S] drift time of each session, since the freeze
    responses: np.ndarray  # [S, A, C, X, R]
    cells: np.ndarray  # [S, A, C] the unit each cell slot recorded
    metrics: dict[str, np.ndarray]  # name → [A, S, S] or [A, S] (analysis.metrics.summary per network)


@dataclass
class PopulationTheory:
    """Infinite-population predictions at the sessions (``/theory/drift/population``; theory/population.py)."""
    t: Tensor  # [S] drift times
    layer: int
    ridge: float  # λ of the fixed decoder
    pv_correlation: Tensor  # [S, S]
    rate_correlation: Tensor  # [S, S]
    similarity: Tensor  # [S, X, X]
    decoder_output: Tensor  # [S, Q] fixed ridge decoder's output on the test stimuli
    decoder_fixed: Tensor  # [S] its accuracy
    decoder_output_inf: Tensor  # [Q] its decorrelated limit (SPEC §6.4)
    decoder_fixed_inf: float
