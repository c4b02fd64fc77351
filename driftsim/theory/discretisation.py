"""The time discretisation shared by the mean predictor and its covariance (SPEC §11): graded grids for a
target accuracy, the lag grid of the covariance's stationary route, and :class:`Discretisation`, the grid
with the kernel expansion fitted on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .expansion import Expansion, expand
from .kernels import KernelModel
from .volterra import graded_grid

__all__ = ["graded_for", "grid_for", "discretise", "Discretisation", "lag_grid", "TAU_MIN_FRACTION"]

# grid constants of grid_for, calibrated in tests/theory/test_mean.py::test_refinement_order
GRID_FIRST, GRID_GROWTH, GRID_MAX = 7.0, 3.5, 1.75


def graded_for(t_end: float, h_first: float, gamma: float, tol_growth: float, tol_max: float,
               include: Tensor) -> Tensor:
    """SPEC §11 graded grid from its first step: growing by B√tol_growth per unit log-time, capped at
    C√tol_max/γ in the diffusive phase, through the times of ``include``."""
    return graded_grid(t_end, h_first=h_first, h_max=GRID_MAX * math.sqrt(tol_max) / gamma,
                       growth=GRID_GROWTH * math.sqrt(tol_growth), include=include)


def grid_for(model: KernelModel, x_train: Tensor, t_end: float, tol: float, include: Tensor) -> tuple[Tensor, float]:
    """SPEC §11 graded grid for accuracy ``tol`` and its first step: h ≈ A√tol/λ_max(K_ntk) in the
    gradient phase, growing by B√tol per unit log-time, capped at C√tol/γ in the diffusive phase.
    Only the linear interpolation of the residual limits the accuracy (the kernel is integrated exactly)."""
    h_first = GRID_FIRST * math.sqrt(tol) / model.max_ntk_eigenvalue(x_train)
    return graded_for(t_end, h_first, model.prior.gamma, tol, tol, include), h_first


# the expansion resolves lags down to this fraction of the grid's first step
TAU_MIN_FRACTION = 0.1


@dataclass(frozen=True)
class Discretisation:
    """What the mean predictor was computed on, for the covariance (SPEC §10) to reuse: the grid t
    [n_grid] (float64, on the device) built for accuracy tol, the NDK expansion over (all points, training
    points), the grid indices rec [n] of the recorded times and i0 of the freeze (0 without one), and the
    expansion's lag range (t_span, tau_min)."""
    t: Tensor
    tol: float
    ndk: Expansion
    rec: Tensor
    i0: int
    t_span: float
    tau_min: float
    prior: Optional[Expansion] = None

    @property
    def h_first(self) -> float:
        """The grid's first step (before merging the recorded times)."""
        return self.tau_min / TAU_MIN_FRACTION


def discretise(model: KernelModel, x_train: Tensor, x_all: Tensor, t_learn: Tensor, t0: Optional[float],
               t_drift: Optional[Tensor], tol: float, with_prior: bool = False) -> Discretisation:
    """SPEC §11 grid through the recorded times and t0, and the expansion of H over (x_all, x_train);
    with ``with_prior`` also that of K_GP (expansion.py), fitted from the same kernel samples."""
    device = x_train.device
    include = torch.cat([t_learn, torch.tensor([t0 if t0 is not None else 0.0], dtype=torch.float64)])
    t, h_first = grid_for(model, x_train, float(t_learn[-1]), tol, include)
    t = t.to(device)
    t_span = float(t_learn[-1]) + (float(t_drift.max()) if t0 is not None else 0.0)
    tau_min = TAU_MIN_FRACTION * h_first
    ex, *prior_ex = expand(model, x_all, x_train, t_span=t_span, tau_min=tau_min,
                           parts=("ndk", "prior") if with_prior else ("ndk",))
    rec = torch.searchsorted(t, t_learn.to(device))
    i0 = int(torch.searchsorted(t, torch.tensor(float(t0 or 0.0), dtype=t.dtype, device=device)))
    return Discretisation(t=t, tol=tol, ndk=ex, rec=rec, i0=i0, t_span=t_span, tau_min=tau_min,
                          prior=prior_ex[0] if with_prior else None)


# the lag grid's growth and largest step are those of grid_for at these multiples of tol: the rows
# are integrated exactly against the prior, so only the fast start limits the accuracy (tests/theory/test_covariance.py)
LAG_GROWTH_TOL, LAG_MAX_TOL = 3.0, 100.0


def lag_grid(disc: Discretisation, gamma: float, include: Tensor) -> Tensor:
    """Grid of lags for _lag_sweep: the first step of the mean's grid (accuracy disc.tol), then growth and
    cap of grid_for at LAG_GROWTH_TOL·tol and LAG_MAX_TOL·tol, through the recorded times and t0
    (include). float64 [n]."""
    return graded_for(float(disc.t[-1]), disc.h_first, gamma, LAG_GROWTH_TOL * disc.tol, LAG_MAX_TOL * disc.tol,
                      include.cpu()).to(disc.t.device)
