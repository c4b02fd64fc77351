"""The time discretisation shared by the mean predictor and its covariance (SPEC §11): graded grids for a
target accuracy, the lag grid of the covariance's stationary route, and :func:`discretise`, which builds
once the :class:`Discretisation` (grid and kernel expansions) that ``mean.solve`` and
``covariance.predictor_covariance`` both take.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from ..activations import Activation
from ..prior import Prior
from ..times import check_times
from .expansion import BLOCK_BYTES, U_LEVELS, Expansion, expand, fit_lags, rates, u_node_count
from .memory import check_budget
from ..validation import check_freeze, check_inputs, check_rate_ratio, check_tol
from .kernels import KernelModel
from .volterra import graded_grid

__all__ = ["graded_for", "first_step", "grid_for", "discretise", "Discretisation", "lag_grid", "TAU_MIN_FRACTION"]

# grid constants of grid_for, calibrated so that the error stays below tol (tests/theory/test_mean.py::
# test_refinement_converges_at_second_order_within_tol)
GRID_FIRST, GRID_GROWTH, GRID_MAX = 7.0, 3.5, 1.75


def graded_for(t_end: float, h_first: float, gamma: float, tol_growth: float, tol_max: float,
               include: Tensor) -> Tensor:
    """SPEC §11 graded grid from its first step: growing by B√tol_growth per unit log-time, capped at
    C√tol_max/γ in the diffusive phase, through the times of ``include``."""
    return graded_grid(t_end, h_first=h_first, h_max=GRID_MAX * math.sqrt(tol_max) / gamma,
                       growth=GRID_GROWTH * math.sqrt(tol_growth), include=include)


def first_step(model: KernelModel, x_train: Tensor, tol: float) -> float:
    """The graded grid's first step for accuracy ``tol``: h ≈ A√tol/λ_max(K_ntk), resolving the gradient phase,
    after checking that the gradient phase and the diffusion are not too far apart (validation.check_rate_ratio)."""
    lam_max = model.max_ntk_eigenvalue(x_train)
    check_rate_ratio(lam_max, model.prior.gamma, model.keys)
    return GRID_FIRST * math.sqrt(tol) / lam_max


def grid_for(model: KernelModel, x_train: Tensor, t_end: float, tol: float, include: Tensor) -> tuple[Tensor, float]:
    """SPEC §11 graded grid for accuracy ``tol`` and its first step: h ≈ A√tol/λ_max(K_ntk) in the
    gradient phase, growing by B√tol per unit log-time, capped at C√tol/γ in the diffusive phase.
    Only the linear interpolation of the residual limits the accuracy (the kernel is integrated exactly)."""
    h_first = first_step(model, x_train, tol)
    return graded_for(t_end, h_first, model.prior.gamma, tol, tol, include), h_first


# the expansion resolves lags down to this fraction of the grid's first step
TAU_MIN_FRACTION = 0.1
# σ0 ≠ σ: the u-nodes interpolate the kernels to U_TOL_FRACTION·tol of their size, and the coefficients'
# u-dependence is cut to its singular vectors above U_REL_FRACTION·tol of the largest (tests/theory/test_mean.py::
# test_the_u_nodes_and_their_cut_keep_the_predictor)
U_TOL_FRACTION, U_REL_FRACTION = 1e-1, 1e-3


@dataclass(frozen=True)
class Discretisation:
    """The grid and kernel expansions that the mean predictor (SPEC §5–6, ``mean.solve``) and its covariance
    (§10, ``covariance.predictor_covariance``) are computed on, with the arguments they were built from.

    Attributes
    ----------
    model : KernelModel
        Architecture and weight prior.
    x_train : Tensor
        [P, N0] training inputs, float64 on the device of the computation.
    x_test : Tensor
        [Q, N0] test inputs covered by the expansions, likewise.
    t_learn : Tensor
        [n] recorded times of the learning phase (float64, CPU).
    t0 : float or None
        Time of the freeze.
    t_drift : Tensor or None
        [m] times since the freeze (float64, CPU); None without a freeze.
    tol : float
        Target accuracy of the grid (SPEC §11).
    t : Tensor
        [n_grid] time grid through t_learn and t0 (float64, on the device).
    ndk : Expansion
        H = NDK/ρ over (training + test points, training points), coef [K, M, P+Q, P].
    kgp : Expansion or None
        K_GP/ρ on the same rates and points (built with ``covariance=True`` when σ0 ≠ σ), else None.
    rec : Tensor
        [n] grid indices of t_learn.
    i0 : int
        Grid index of t0 (0 without a freeze).
    t_span, tau_min : float
        Range of lags the expansions resolve.
    """
    model: KernelModel
    x_train: Tensor
    x_test: Tensor
    t_learn: Tensor
    t0: Optional[float]
    t_drift: Optional[Tensor]
    tol: float
    t: Tensor
    ndk: Expansion
    kgp: Optional[Expansion]
    rec: Tensor
    i0: int
    t_span: float
    tau_min: float

    @property
    def h_first(self) -> float:
        """The grid's first step (before merging the recorded times)."""
        return self.tau_min / TAU_MIN_FRACTION

    def check_reuse(self, x_train: Tensor, x_test: Tensor, model: KernelModel, t_learn: Tensor,
                    t0: Optional[float], t_drift: Optional[Tensor], tol: Optional[float] = None) -> None:
        """Check that this discretisation was built from these (validated) arguments.

        Parameters
        ----------
        x_train, x_test : Tensor
            [P, N0], [Q, N0] inputs, float64 on the discretisation's device.
        model : KernelModel
            Architecture and prior of the caller.
        t_learn : Tensor
            [n] recorded times.
        t0 : float or None
            Time of the freeze.
        t_drift : Tensor or None
            [m] times since the freeze (None without t0).
        tol : float, optional
            Target accuracy; None: not compared.

        Raises
        ------
        ValueError
            Naming every argument that differs, and how to build a matching discretisation.
        """
        def same(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
            return (a is None) == (b is None) and (a is None or (a.shape == b.shape and torch.equal(a, b.to(a))))

        checks = {"x_train": same(self.x_train, x_train), "x_test": same(self.x_test, x_test),
                  "depth, activation, prior": self.model == model, "t_learn": same(self.t_learn, t_learn),
                  "t0": self.t0 == t0, "t_drift": same(self.t_drift, t_drift),
                  "tol": tol is None or self.tol == tol}
        differ = [name for name, ok in checks.items() if not ok]
        if differ:
            raise ValueError(f"discretisation was built for other {', '.join(differ)} than given here; allowed: "
                             "the Discretisation that discretise(...) returns for the same arguments")


def _check_protocol(t_learn: Tensor, t0: Optional[float], t_drift: Optional[Tensor], tol: float) -> Optional[Tensor]:
    """The accuracy and the freeze of a run: tol in (0, 1), 0 ≤ t0 ≤ t_learn[-1], t_drift given with t0.
    Returns the validated t_drift (float64, CPU), None without t0."""
    check_tol(tol)
    check_freeze(t0, t_drift, float(t_learn[-1]))
    if t0 is None:
        return None
    return check_times("t_drift", t_drift)


def _budget(model: KernelModel, x_train: Tensor, q: int, lam_max: float, tol: float, parts: int, u_nodes: int,
            memory_gb: Optional[float], lam_at_most: float) -> float:
    """theory/memory.check_budget for the expansion that ``lam_max`` (λ_max(K_ntk), or a lower bound) implies
    on ``u_nodes`` nodes; ``lam_at_most`` bounds λ_max of any smaller problem (for the largest P the refusal
    names)."""
    gamma = model.prior.gamma

    def count(lam: float) -> tuple[int, int]:
        tau_min = TAU_MIN_FRACTION * GRID_FIRST * math.sqrt(tol) / lam
        return rates(gamma, tau_min).numel(), fit_lags(gamma, tau_min, stationary=u_nodes == 1)

    (k, lags), (k_most, lags_most) = count(lam_max), count(lam_at_most)
    return check_budget(x_train.shape[0], q, k, u_nodes, parts, max(lags, lags_most),
                        memory_gb, x_train.device, rates_at_most=k_most)


def discretise(x_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation], prior: Prior,
               t_learn: Tensor, t0: Optional[float] = None, t_drift: Optional[Tensor] = None, tol: float = 1e-4,
               covariance: bool = False, memory_gb: Optional[float] = None, progress: bool = False) -> Discretisation:
    """SPEC §11 grid for accuracy ``tol`` through the recorded times and t0, with the expansion of the NDK
    (SPEC §3.2, expansion.py) over all points and, if ``covariance``, that of K_GP (§3.1) fitted from the
    same kernel samples, to pass to ``mean.solve`` and ``covariance.predictor_covariance``.

    Parameters
    ----------
    x_train, x_test, depth, activation, prior, t_learn, t0, t_drift, tol
        As for ``mean.solve`` (the inputs [P, N0] and [Q, N0] set the device of the computation).
    covariance : bool
        Also expand K_GP, which the covariance needs when σ0 ≠ σ (with σ0 = σ it follows from the NDK's
        by fluctuation–dissipation and is not fitted).
    memory_gb : float, optional
        The memory budget (``theory.memory_gb``; None: half the free memory of the device). A problem whose
        expansion cannot fit is refused before any P²-sized work (theory/memory.py); the kernel samples of
        the fit take what the budget leaves.
    progress : bool
        Show the kernel fit's progress bar.

    Returns
    -------
    Discretisation

    Raises
    ------
    ValueError
        For bad inputs, naming the argument and what is allowed.
    """
    x_train = check_inputs("x_train", x_train)
    x_test = check_inputs("x_test", x_test, dim=x_train.shape[1])
    t_learn = check_times("t_learn", t_learn)
    tau = _check_protocol(t_learn, t0, t_drift, tol)
    model = KernelModel(activation, depth, prior)
    device = x_train.device
    x_train, x_test = (a.to(device=device, dtype=torch.float64) for a in (x_train, x_test))
    with_kgp = covariance and prior.sigma0 != prior.sigma
    parts = ("ndk", "kgp") if with_kgp else ("ndk",)
    # before anything P²-sized: λ_max ≥ max K_ntk(x, x) bounds the rates from below, so a problem refused
    # here is too large whatever λ_max is (and λ_max ≤ trace ≤ P max K_ntk(x, x) bounds those of any smaller
    # problem); then the exact check once λ_max is known (a principal submatrix's λ_max is smaller: it bounds
    # the smaller problems; the first check with the fewest u-nodes any σ0 ≠ σ problem takes, the second with
    # those the u-probe chose). The fit's samples take what is left, in blocks of at most BLOCK_BYTES
    q, diagonal = x_test.shape[0], float(model.ntk_diagonal(x_train).max())
    stationary = prior.sigma0 == prior.sigma
    _budget(model, x_train, q, diagonal, tol, len(parts), 1 if stationary else U_LEVELS[0], memory_gb,
            x_train.shape[0] * diagonal)
    include = torch.cat([t_learn, torch.tensor([t0 if t0 is not None else 0.0], dtype=torch.float64)])
    t, h_first = grid_for(model, x_train, float(t_learn[-1]), tol, include)
    lam_max = GRID_FIRST * math.sqrt(tol) / h_first
    t = t.to(device)
    t_span = float(t_learn[-1]) + (float(tau.max()) if t0 is not None else 0.0)
    tau_min = TAU_MIN_FRACTION * h_first
    x_all = torch.cat([x_train, x_test])
    u_nodes = u_node_count(model, x_all, x_train, t_span, tau_min, U_TOL_FRACTION * tol, parts=parts)
    block = _budget(model, x_train, q, lam_max, tol, len(parts), u_nodes, memory_gb, lam_max)
    ndk, *kgp = expand(model, x_all, x_train, t_span=t_span, tau_min=tau_min, u_nodes=u_nodes, parts=parts,
                       u_rel=U_REL_FRACTION * tol, basis_rows=x_train.shape[0], block_bytes=min(block, BLOCK_BYTES),
                       progress=progress)
    rec = torch.searchsorted(t, t_learn.to(device))
    i0 = int(torch.searchsorted(t, torch.tensor(float(t0 or 0.0), dtype=t.dtype, device=device)))
    return Discretisation(model=model, x_train=x_train, x_test=x_test, t_learn=t_learn, t0=t0, t_drift=tau,
                          tol=tol, t=t, ndk=ndk, kgp=kgp[0] if with_kgp else None, rec=rec, i0=i0, t_span=t_span,
                          tau_min=tau_min)


# the lag grid's growth and largest step are those of grid_for at these multiples of tol: the rows
# are integrated exactly against the prior, so only the fast start limits the accuracy (tests/theory/test_covariance.py)
LAG_GROWTH_TOL, LAG_MAX_TOL = 3.0, 100.0


def lag_grid(disc: Discretisation, gamma: float, include: Tensor) -> Tensor:
    """Grid of lags for _lag_sweep: the first step of the mean's grid (accuracy disc.tol), then growth and
    cap of grid_for at LAG_GROWTH_TOL·tol and LAG_MAX_TOL·tol, through the recorded times and t0
    (include). float64 [n]."""
    return graded_for(float(disc.t[-1]), disc.h_first, gamma, LAG_GROWTH_TOL * disc.tol, LAG_MAX_TOL * disc.tol,
                      include.cpu()).to(disc.t.device)
