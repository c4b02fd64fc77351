"""Mean predictor of the Langevin dynamics over time, its NTK and NNGP limits, and the frozen-readout
drift predictor (SPEC §5, §6), from the kernels of ``kernels.py`` and the solver of ``volterra.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .activations import Activation
from .kernels import KernelModel, check_inputs
from .prior import Prior
from .results import Equilibrium, TheoryDrift, TheoryLearn, TheoryResult
from .expansion import Expansion, expand
from .times import check_times
from .volterra import graded_grid, solve_separable

__all__ = ["solve", "check_tol", "grid_for", "graded_for", "discretise", "Discretisation", "ntk_predictor", "nngp_predictor"]

# grid constants of grid_for, calibrated in tests/test_theory.py::test_refinement_order
GRID_FIRST, GRID_GROWTH, GRID_MAX = 7.0, 3.5, 1.75


def _check_labels(y: Tensor, p: int) -> Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != p:
        raise ValueError(f"y_train must have shape [{p}] to match x_train; got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y_train contains NaN or inf; allowed: finite values only")
    return y


def check_tol(tol: float) -> None:
    """ValueError unless 0 < tol < 1 (the target accuracy of the Volterra solution)."""
    if not (0 < tol < 1):
        raise ValueError(f"theory.tol={tol!r} is not allowed: a number in (0, 1)")


def ntk_predictor(k_ntk: Tensor, p: int, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """SPEC §5.2: f_train(t) = (I − e^(−K t)) Y, f_test(t) = k K⁻¹ (I − e^(−K t)) Y.

    k_ntk: [P+Q, P+Q] (training points first); t: [n]. Returns ([n, P], [n, Q]).
    """
    evals, evecs = torch.linalg.eigh(k_ntk[:p, :p])
    coef = evecs.T @ y  # Y in the eigenbasis
    fit = (1 - torch.exp(-t[:, None] * evals[None, :])) * coef[None, :]  # [n, P] in the eigenbasis
    f_train = fit @ evecs.T
    # k K⁻¹ (I − e^(−Kt)) Y; (1 − e^(−λt))/λ stays finite for tiny λ
    f_test = (fit / evals[None, :]) @ (k_ntk[p:, :p] @ evecs).T
    return f_train, f_test


def nngp_predictor(k_gp: Tensor, p: int, y: Tensor, T: float) -> Equilibrium:
    """SPEC §5.3: f_train = K_gp (K_gp + T I)⁻¹ Y, f_test = k_gp (K_gp + T I)⁻¹ Y (posterior mean)."""
    alpha = torch.linalg.solve(k_gp[:p, :p] + T * torch.eye(p, dtype=k_gp.dtype, device=k_gp.device), y)
    return Equilibrium(f_train=k_gp[:p, :p] @ alpha, f_test=k_gp[p:, :p] @ alpha)


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
    """What the mean predictor was computed on, for the fluctuations (SPEC §10) to reuse: the grid t
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


def solve(x_train: Tensor, y_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation],
          prior: Prior, t_learn: Tensor, t0: Optional[float] = None, t_drift: Optional[Tensor] = None,
          tol: float = 1e-4, progress: bool = True, for_covariance: bool = False) -> TheoryResult:
    """Mean predictor over the learning run (SPEC §5.1), NTK theory on the same times (§5.2), NNGP
    equilibrium (§5.3), and, if t0 is given, the frozen-readout predictor at t0 + t_drift (§6.2) with its
    decorrelated limit (§6.4).

    x_train: [P, N0], y_train: [P], x_test: [Q, N0]; t_learn: [n] recorded times (ascending, ≥ 0);
    t_drift: [m] times since the freeze. Computation in float64 on the device of x_train.
    for_covariance: also expand K_GP from the same kernel samples when σ0 ≠ σ (with σ0 = σ it follows from
    the NDK's), so that fluctuations.predictor_covariance reusing the discretisation needs no second fit.
    """
    x_train = check_inputs("x_train", x_train)
    x_test = check_inputs("x_test", x_test, dim=x_train.shape[1])
    p = x_train.shape[0]
    y = _check_labels(y_train, p)
    check_tol(tol)
    t_learn = check_times("t_learn", t_learn)
    t_end = float(t_learn[-1])
    if t0 is not None and not (0 <= t0 <= t_end):
        raise ValueError(f"protocol.t0={t0!r} is outside the run: allowed 0 <= t0 <= {t_end:g} (the last recorded time)")
    if t0 is not None and t_drift is None:
        raise ValueError("t_drift (times since the freeze) must be given with t0")
    tau = check_times("t_drift", t_drift) if t0 is not None else None

    device = x_train.device
    x_train, x_test, y = (a.to(device=device, dtype=torch.float64) for a in (x_train, x_test, y))
    model = KernelModel(activation, depth, prior)
    x_all = torch.cat([x_train, x_test])
    k_ntk, k_gp = model.ntk(x_all, x_all), model.nngp(x_all, x_all)
    f_ntk_train, f_ntk_test = ntk_predictor(k_ntk, p, y, t_learn.to(device))

    disc = discretise(model, x_train, x_all, t_learn, t0, tau, tol,
                      with_prior=for_covariance and prior.sigma0 != prior.sigma)
    t, ex, rec, i0 = disc.t, disc.ndk, disc.rec, disc.i0
    gamma = prior.gamma
    keep, slot = torch.unique(torch.cat([rec, torch.tensor([i0], device=device)]), return_inverse=True)
    # NDK = ρ H: the rates of the learning kernel are α + 1 (expansion.py)
    f, z = solve_separable(ex.coef[:, :, :p], (ex.alpha + 1) * gamma, ex.basis_u(torch.exp(-2 * gamma * t)),
                           t, y, keep, progress=progress, desc="theory: learning")
    z_rec, z0 = z[slot[:-1]], z[slot[-1]]
    f_test = torch.einsum("kmqp,nkmp->nq", ex.coef[:, :, p:], z_rec)
    learn = TheoryLearn(t=t_learn, f_train=f[rec], f_test=f_test, f_ntk_train=f_ntk_train, f_ntk_test=f_ntk_test)
    nngp = nngp_predictor(k_gp, p, y, prior.T)
    ntk_eq = Equilibrium(f_train=y.clone(), f_test=k_ntk[p:, :p] @ torch.linalg.solve(k_ntk[:p, :p], y))
    drift = None
    if t0 is not None:
        tau = tau.to(device)
        # SPEC §6.2 = Σ e^(−α γ τ) coef z(t0); τ → ∞ keeps the α = 0 (mean-kernel) term, SPEC §6.4
        f_fr = torch.einsum("nk,kmap,kmp->na", torch.exp(-gamma * tau[:, None] * ex.alpha[None, :]), ex.coef, z0)
        f_inf = torch.einsum("map,mp->a", ex.coef[0], z0[0])
        drift = TheoryDrift(t0=float(t0), t=tau, f_train=f_fr[:, :p], f_test=f_fr[:, p:],
                            f_inf_train=f_inf[:p], f_inf_test=f_inf[p:])
    return TheoryResult(learn=learn, nngp=nngp, ntk=ntk_eq, kernel_nngp=k_gp, kernel_ntk=k_ntk, drift=drift,
                        grid_size=int(t.shape[0]), fit_error=ex.fit_error, discretisation=disc)
