"""Separable expansion of the two-time kernels in sums of exponentials (SPEC §3.2, §6.2, §11).

With ρ = e^(−γ(t−s)) and u = e^(−2γs) (t ≥ s), every weight correlation is a function of (ρ, u):
C(s,s) = σ² + Δu, C(t,t) = σ² + Δuρ², C(t,s) = ρ C(s,s), Δ = σ0² − σ². Hence

    NDK(t,s)                 = ρ H(ρ, u),      H = K_L + ρ C(s,s) K'_L G_L          (part "ndk"),
    frozen kernel (§6.2)     = e^(−γ(t0−s)) H(ρ_ts, u_s),
    prior covariance (§3.1)  = K_GP(t,s) = ρ A(ρ, u),      A = C(s,s) K_L   (part "kgp").

We write H(ρ, u) = H(0, u) + Σ_k B_k(u) ρ^{α_k} (and A likewise, with coefficients A_k(u) on the same
rates) with a fixed ladder of rates α_k (a few integers,
then log-spaced up to the smallest lag that matters) fitted by least squares in ρ, and Lagrange
interpolation in u at Chebyshev nodes (a single node when σ0 = σ: then H does not depend on u).
H(0, u) is the decorrelated mean kernel m_∞(x) m_s(x') (§6.4), kept exact. The expansion turns the
Volterra history into running sums (``volterra.solve_separable``) and gives the drift phase in closed
form, while the √τ cusp of relu is represented by the fast rates instead of being under-resolved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import BarycentricInterpolator
from torch import Tensor

from .kernels import KernelModel

__all__ = ["Expansion", "expand"]


@dataclass(frozen=True)
class Expansion:
    """H(ρ, u; xa, xb) ≈ Σ_k Σ_m coef[k, m] ρ^{alpha[k]} ℓ_m(u), with alpha[0] = 0 (the mean kernel).

    alpha: [K]; u_nodes: [M]; coef: [K, M, p, q]; fit_error: max |H − fit| on validation lags.
    """
    alpha: Tensor
    u_nodes: Tensor
    coef: Tensor
    fit_error: float

    def basis_u(self, u: Tensor) -> Tensor:
        """ℓ_m(u), the Lagrange basis at the Chebyshev nodes (module docstring).

        Parameters
        ----------
        u : Tensor
            [n] values of u = e^(−2γs).

        Returns
        -------
        Tensor
            [n, M], in u's dtype and on its device.
        """
        if self.u_nodes.numel() == 1:
            return torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device)
        interp = BarycentricInterpolator(self.u_nodes.cpu().numpy(), np.eye(self.u_nodes.numel()))
        return torch.as_tensor(interp(u.cpu().numpy()), dtype=u.dtype, device=u.device)


def n_rates(gamma: float, tau_min: float, per_decade: int = 6) -> int:
    """K, the number of rates of the expansion's α ladder for lags resolved down to ``tau_min``."""
    top = max(1.0 / (gamma * tau_min), 10.0)
    return 5 + max(2, int(math.ceil(per_decade * math.log10(top / 5.0))))


def _rates(gamma: float, tau_min: float, per_decade: int) -> Tensor:
    """α ladder: 0 (mean kernel), 1..4, then log-spaced from 5 to 1/(γ τ_min)."""
    top = max(1.0 / (gamma * tau_min), 10.0)
    n_log = n_rates(gamma, tau_min, per_decade) - 5
    return torch.cat([torch.arange(0, 5, dtype=torch.float64),
                      torch.logspace(math.log10(5.0), math.log10(top), n_log, dtype=torch.float64)])


def _chebyshev_nodes(m: int) -> Tensor:
    """Chebyshev points of the second kind on [0, 1] (ends included: u = 1 is s = 0)."""
    k = torch.arange(m, dtype=torch.float64)
    return 0.5 * (1 - torch.cos(math.pi * k / (m - 1)))


PARTS = ("ndk", "kgp")


def _h_samples(model: KernelModel, tau: Tensor, s: float, xa: Tensor, xb: Tensor, parts: tuple) -> Tensor:
    """H(ρ(τ), u(s)) = K_L + ρ C(s,s) K'_L G_L at times (s + τ, s) ("ndk") and A = C(s,s) K_L ("kgp"),
    from one evaluation of the two-time kernels; τ: [n] → [n, p, q·len(parts)] (parts side by side)."""
    prior = model.prior
    s_ = torch.full_like(tau, s)
    tt = model.two_time(s + tau, s_, xa, xb)
    c_s = prior.var(s_)[:, None, None]
    rho = torch.exp(-prior.gamma * tau)[:, None, None]
    return torch.cat([c_s * tt.k if part == "kgp" else tt.k + rho * c_s * tt.kp * tt.g for part in parts], 2)


def expand(model: KernelModel, xa: Tensor, xb: Tensor, t_span: float, tau_min: float,
           per_decade: int = 6, u_nodes: int = 12, parts: tuple = ("ndk",)) -> tuple[Expansion, ...]:
    """Fit the expansion of H = NDK/ρ (SPEC §3.2, module docstring) and/or of A = K_GP/ρ (§3.1) for lags up
    to ``t_span`` resolved down to ``tau_min``, on the same rates and nodes, from one evaluation of the kernels.

    Parameters
    ----------
    model : KernelModel
        Architecture and weight prior.
    xa, xb : Tensor
        [p, N0] and [q, N0] inputs (first and second argument of the kernels).
    t_span, tau_min : float
        Largest lag to represent and smallest lag to resolve.
    per_decade : int
        Rates per decade of the log-spaced part of the ladder.
    u_nodes : int
        Chebyshev nodes in u (one node when σ0 = σ).
    parts : tuple of str
        Which kernels to expand: "ndk" (H), "kgp" (A).

    Returns
    -------
    tuple of Expansion
        One per entry of ``parts``, coef [K, M, p, q]; the fit runs in float64 on the CPU and the
        coefficients move to xa's device.

    Raises
    ------
    ValueError
        If ``parts`` is empty or names another kernel.
    """
    if not parts or any(part not in PARTS for part in parts):
        raise ValueError(f"parts={parts!r}: allowed a non-empty tuple of {PARTS}")
    prior = model.prior
    gamma = prior.gamma
    dev, cpu = xa.device, torch.device("cpu")
    xa_c, xb_c = xa.to(cpu, torch.float64), xb.to(cpu, torch.float64)
    alpha = _rates(gamma, tau_min, per_decade)
    stationary = prior.sigma0 == prior.sigma
    nodes = torch.ones(1, dtype=torch.float64) if stationary else _chebyshev_nodes(u_nodes)
    lo, hi = math.log10(tau_min / 10), math.log10(max(t_span, 40.0 / gamma))
    n_fit = 8 * alpha.numel()
    tau_fit = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(lo, hi, n_fit, dtype=torch.float64)])
    # validation lags fall between the fitting lags
    tau_val = torch.logspace(lo + 0.5 * (hi - lo) / n_fit, hi, n_fit - 1, dtype=torch.float64)
    basis = lambda tau: torch.exp(-gamma * tau[:, None] * alpha[None, 1:])  # noqa: E731  [n, K-1]
    b_fit, b_val = basis(tau_fit), basis(tau_val)
    # least squares through the pseudo-inverse (SVD, rank cut as LAPACK's gelsd): shared by the u-nodes
    solver = torch.linalg.pinv(b_fit)
    p, q, n_parts = xa.shape[0], xb.shape[0], len(parts)
    coef = torch.empty(alpha.numel(), nodes.numel(), p, q * n_parts, dtype=torch.float64)
    err = torch.zeros(n_parts, dtype=torch.float64)
    m_inf = model.last_layer_mean(torch.full((1,), prior.sigma ** 2, dtype=torch.float64), xa_c)[0]
    for m, u in enumerate(nodes.tolist()):
        # u = 0 is s = ∞: take the stationary limit at a late time instead
        s = 0.0 if stationary else (-math.log(u) / (2 * gamma) if u > 0 else 60.0 / gamma)
        su = torch.full((1,), s, dtype=torch.float64)
        h0 = m_inf[:, None] * model.last_layer_mean(prior.var(su), xb_c)[0][None, :]
        # H(0, u) = m_∞ m_s and A(0, u) = C(s,s) m_∞ m_s
        h0 = torch.cat([h0 * (prior.var(su) if part == "kgp" else 1.0) for part in parts], 1)
        target = (_h_samples(model, tau_fit, s, xa_c, xb_c, parts) - h0).reshape(tau_fit.numel(), -1)
        sol = solver @ target  # [K-1, p*q*n_parts]
        coef[0, m] = h0
        coef[1:, m] = sol.reshape(-1, p, q * n_parts)
        val = (_h_samples(model, tau_val, s, xa_c, xb_c, parts) - h0).reshape(tau_val.numel(), p, n_parts, q)
        miss = (b_val @ sol).view(-1, p, n_parts, q) - val
        err = torch.maximum(err, miss.abs().amax((0, 1, 3)))
    coefs = coef.view(alpha.numel(), nodes.numel(), p, n_parts, q).unbind(3)
    return tuple(Expansion(alpha=alpha.to(dev), u_nodes=nodes.to(dev), coef=c.contiguous().to(dev),
                           fit_error=float(e)) for c, e in zip(coefs, err))
