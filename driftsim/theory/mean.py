"""Mean predictor of the Langevin dynamics over time, its NTK and NNGP limits, and the frozen-readout
drift predictor (SPEC §5, §6), from the kernels of ``kernels.py`` and the solver of ``volterra.py``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..activations import Activation
from ..prior import Prior
from ..results import Equilibrium, TheoryDrift, TheoryLearn, TheoryResult
from ..times import check_times
from ..validation import (check_depth, check_finite, check_freeze, check_inputs, check_labels, check_scales,
                          check_tol, numerical_failures)
from .discretisation import Discretisation, discretise
from .kernels import KernelModel
from .volterra import solve_separable

__all__ = ["solve", "ntk_predictor", "nngp_predictor"]


def ntk_predictor(k_ntk: Tensor, p: int, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """SPEC §5.2: f_train(t) = (I − e^(−K t)) Y, f_test(t) = k K⁻¹ (I − e^(−K t)) Y.

    Parameters
    ----------
    k_ntk : Tensor
        [P+Q, P+Q] NTK, training points first.
    p : int
        Number of training points P.
    y : Tensor
        [P] labels.
    t : Tensor
        [n] times.

    Returns
    -------
    f_train, f_test : Tensor
        [n, P] and [n, Q].
    """
    evals, evecs = torch.linalg.eigh(k_ntk[:p, :p])
    coef = evecs.T @ y  # Y in the eigenbasis
    fit = -torch.expm1(-t[:, None] * evals[None, :]) * coef[None, :]  # [n, P] in the eigenbasis
    f_train = fit @ evecs.T
    # k K⁻¹ (I − e^(−Kt)) Y; expm1 keeps (1 − e^(−λt))/λ accurate for tiny λ
    f_test = (fit / evals[None, :]) @ (k_ntk[p:, :p] @ evecs).T
    return f_train, f_test


def nngp_predictor(k_gp: Tensor, p: int, y: Tensor, T: float) -> Equilibrium:
    """SPEC §5.3: f_train = K_gp (K_gp + T I)⁻¹ Y, f_test = k_gp (K_gp + T I)⁻¹ Y (posterior mean).

    Parameters
    ----------
    k_gp : Tensor
        [P+Q, P+Q] NNGP kernel, training points first.
    p : int
        Number of training points P.
    y : Tensor
        [P] labels.
    T : float
        Temperature, the noise variance of the posterior.

    Returns
    -------
    Equilibrium
        f_train [P], f_test [Q].
    """
    alpha = torch.linalg.solve(k_gp[:p, :p] + T * torch.eye(p, dtype=k_gp.dtype, device=k_gp.device), y)
    return Equilibrium(f_train=k_gp[:p, :p] @ alpha, f_test=k_gp[p:, :p] @ alpha)


def solve(x_train: Tensor, y_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation],
          prior: Prior, t_learn: Tensor, t0: Optional[float] = None, t_drift: Optional[Tensor] = None,
          tol: float = 1e-4, progress: bool = True,
          discretisation: Optional[Discretisation] = None) -> TheoryResult:
    """Mean predictor over the learning run (SPEC §5.1), NTK theory on the same times (§5.2), NNGP
    equilibrium (§5.3), and, if t0 is given, the frozen-readout predictor at t0 + t_drift (§6.2) with its
    decorrelated limit (§6.4).

    Parameters
    ----------
    x_train : Tensor
        [P, N0] training inputs; the computation runs in float64 on their device.
    y_train : Tensor
        [P] labels.
    x_test : Tensor
        [Q, N0] test inputs.
    depth : int
        Number of hidden layers L ≥ 1.
    activation : str or Activation
        φ, by name or as an object.
    prior : Prior
        Weight prior (T, σ, σ0) of SPEC §2.
    t_learn : Tensor
        [n] recorded times of learning, ascending, ≥ 0.
    t0 : float, optional
        Time of the freeze, 0 ≤ t0 ≤ t_learn[-1].
    t_drift : Tensor, optional
        [m] times since the freeze; required with t0.
    tol : float
        Target accuracy in (0, 1) of the Volterra solution (sets the grid, SPEC §11).
    progress : bool
        Show a progress bar over the grid.
    discretisation : Discretisation, optional
        What ``discretisation.discretise`` returned for the same arguments, so that the covariance
        (``covariance.predictor_covariance``) can reuse it; None: built here.

    Returns
    -------
    TheoryResult
        learn [n times], nngp, ntk, the kernels [P+Q, P+Q], drift [m times] with t0 (else None),
        grid_size and fit_error.

    Raises
    ------
    ValueError
        For bad inputs (naming the argument and what is allowed), or a discretisation built from other
        arguments.
    """
    x_train = check_inputs("x_train", x_train)
    x_test = check_inputs("x_test", x_test, dim=x_train.shape[1])
    p = x_train.shape[0]
    y = check_labels(y_train, p)
    check_tol(tol)
    t_learn = check_times("t_learn", t_learn)
    check_freeze(t0, t_drift, float(t_learn[-1]))
    tau = check_times("t_drift", t_drift) if t0 is not None else None

    check_scales(prior.T, prior.sigma, prior.sigma0, check_depth(depth))
    keys = KernelModel(activation, depth, prior).keys
    with numerical_failures(keys):
        return _solve(x_train, y, x_test, depth, activation, prior, t_learn, t0, tau, tol, progress,
                      discretisation, keys)


def _solve(x_train: Tensor, y: Tensor, x_test: Tensor, depth: int, activation: Union[str, Activation],
           prior: Prior, t_learn: Tensor, t0: Optional[float], tau: Optional[Tensor], tol: float, progress: bool,
           discretisation: Optional[Discretisation], keys: str) -> TheoryResult:
    """solve() on checked arguments; every result checked finite where it arises (naming ``keys``)."""
    p = x_train.shape[0]
    device = x_train.device
    x_train, x_test, y = (a.to(device=device, dtype=torch.float64) for a in (x_train, x_test, y))
    model = KernelModel(activation, depth, prior)
    x_all = torch.cat([x_train, x_test])
    k_gp, k_ntk = model.nngp_ntk(x_all, x_all)
    k_ntk = check_finite("the NTK of the training and test points", k_ntk, keys)
    k_gp = check_finite("the NNGP kernel of the training and test points", k_gp, keys)
    f_ntk_train, f_ntk_test = ntk_predictor(k_ntk, p, y, t_learn.to(device))

    if discretisation is None:
        disc = discretise(x_train, x_test, depth=depth, activation=activation, prior=prior, t_learn=t_learn,
                          t0=t0, t_drift=tau, tol=tol)
    else:
        discretisation.check_reuse(x_train, x_test, model, t_learn, t0, tau, tol)
        disc = discretisation
    t, ex, rec, i0 = disc.t, disc.ndk, disc.rec, disc.i0
    gamma = prior.gamma
    keep, slot = torch.unique(torch.cat([rec, torch.tensor([i0], device=device)]), return_inverse=True)
    # NDK = ρ H: the rates of the learning kernel are α + 1 (expansion.py)
    f, z = solve_separable(ex.coef[:, :, :p], (ex.alpha + 1) * gamma, ex.basis_u(torch.exp(-2 * gamma * t)),
                           t, y, keep, progress=progress, desc="theory: learning")
    z_rec, z0 = z[slot[:-1]], z[slot[-1]]
    check_finite("the mean predictor on the training points (SPEC §5.1)", f, keys)
    f_test = check_finite("the mean predictor on the test points (SPEC §5.1)",
                          torch.einsum("kmqp,nkmp->nq", ex.coef[:, :, p:], z_rec), keys)
    learn = TheoryLearn(t=t_learn, f_train=f[rec], f_test=f_test, f_ntk_train=f_ntk_train, f_ntk_test=f_ntk_test)
    nngp = nngp_predictor(k_gp, p, y, prior.T)
    ntk_eq = Equilibrium(f_train=y.clone(), f_test=k_ntk[p:, :p] @ torch.linalg.solve(k_ntk[:p, :p], y))
    drift = None
    if t0 is not None:
        tau = tau.to(device)
        # SPEC §6.2 = Σ e^(−α γ τ) coef z(t0); τ → ∞ keeps the α = 0 (mean-kernel) term, SPEC §6.4
        # coef·z0 first: the three-way einsum can hold an [n, K, M, P+Q, P] intermediate (2.4 GB at P = 400)
        f_fr = torch.exp(-gamma * tau[:, None] * ex.alpha[None, :]) @ torch.einsum("kmap,kmp->ka", ex.coef, z0)
        check_finite("the frozen-readout predictor (SPEC §6.2)", f_fr, keys)
        f_inf = torch.einsum("map,mp->a", ex.coef[0], z0[0])
        drift = TheoryDrift(t0=float(t0), t=tau, f_train=f_fr[:, :p], f_test=f_fr[:, p:],
                            f_inf_train=f_inf[:p], f_inf_test=f_inf[p:])
    return TheoryResult(learn=learn, nngp=nngp, ntk=ntk_eq, kernel_nngp=k_gp, kernel_ntk=k_ntk, drift=drift,
                        grid_size=int(t.shape[0]), fit_error=ex.fit_error)
