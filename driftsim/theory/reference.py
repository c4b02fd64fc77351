"""Oracles for tests and benchmarks, independent of the production route: the kernels of SPEC §3.2, §6.2
and §6.4 evaluated directly at pairs of times, the exact OU transition of §2, and the trapezoid
product-integration solver of SPEC §11 (which the exponential expansion of ``volterra.solve_separable``
replaces in production).

The solver takes the kernel as a callable that returns K(t_i, t_j) for one row i and a block of columns
j, so that no (n_times² × P²) array ever exists: memory is one block of a row.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..prior import Prior
from .kernels import KernelModel

__all__ = ["ndk", "frozen", "mean_kernel", "transition", "trapezoid_weights", "weighted_sum", "solve_second_kind",
           "BLOCK_ENTRIES"]

# Kernel entries evaluated at once: bounds memory (a few hundred MB with the recursion's temporaries).
BLOCK_ENTRIES = 2_000_000

RowKernel = Callable[[int, Tensor], Tensor]  # (i, js [b]) -> K(t_i, t_js) [b, p, P]


def ndk(model: KernelModel, t: Tensor, s: Tensor, xa: Tensor, xb: Tensor) -> Tensor:
    """SPEC §3.2 NDK for t ≥ s: K_d = e^(−γ(t−s)) [K_L + C(t,s) K'_L G_L]; t, s: [B] → [B, p, q]."""
    tt = model.two_time(t, s, xa, xb)
    return model.ndk_from(t, s, tt)


def frozen(model: KernelModel, t: Tensor, s: Tensor, t0: float, xa: Tensor, xb: Tensor) -> Tensor:
    """SPEC §6.2 frozen-readout kernel for s ≤ t0 ≤ t:
    e^(−γ(t0−s)) K_L(t,s) + e^(−γ(t−s)) C(t0,s) K'_L(t,s) G_L(t,s); t, s: [B] → [B, p, q].
    """
    tt = model.two_time(t, s, xa, xb)
    g = model.prior.gamma
    t0_ = torch.full_like(s, t0)
    w_k = torch.exp(-g * (t0 - s))[:, None, None]
    w_g = (torch.exp(-g * (t - s)) * model.prior.cov(t0_, s))[:, None, None]
    return w_k * tt.k + w_g * tt.kp * tt.g


def mean_kernel(model: KernelModel, xa: Tensor, xb: Tensor) -> Tensor:
    """SPEC §6.4 decorrelated mean kernel K̄(x,x') = E[φ(h_L(x))] E[φ(h_L(x'))] at equilibrium; [p, q]."""
    s2 = torch.full((1,), model.prior.sigma ** 2, dtype=xa.dtype, device=xa.device)
    return model.last_layer_mean(s2, xa)[0][:, None] * model.last_layer_mean(s2, xb)[0][None, :]


def transition(prior: Prior, theta: Tensor, dt: float, noise: Tensor) -> Tensor:
    """SPEC §2 exact transition: θ(t+dt) = e^(−γdt) θ(t) + √(σ²(1 − e^(−2γdt))) ξ, ξ = ``noise``."""
    decay, std = prior.coefficients(dt)
    return decay * theta + std * noise


def trapezoid_weights(t: Tensor, upto: int) -> Tensor:
    """Weights w_j (j = 0..upto) of the trapezoid rule for ∫_0^{t_upto} on the grid t; [upto + 1]."""
    w = torch.zeros(upto + 1, dtype=t.dtype, device=t.device)
    if upto == 0:
        return w
    h = torch.diff(t[: upto + 1])
    w[:-1] += h / 2
    w[1:] += h / 2
    return w


def _blocks(n: int, per_item: int):
    size = max(1, BLOCK_ENTRIES // max(per_item, 1))
    for start in range(0, n, size):
        yield start, min(start + size, n)


def weighted_sum(kernel: Callable[[Tensor], Tensor], weights: Tensor, r: Tensor, per_item: int) -> Tensor:
    """Σ_j weights[j] K_j r_j with K_j = kernel(js) [b, p, P] evaluated block by block.

    weights: [m]; r: [m, P]; returns [p]. ``per_item`` = p·P entries per j, for the block size.
    """
    total = None
    for a, b in _blocks(weights.shape[0], per_item):
        js = torch.arange(a, b, device=weights.device)
        k = kernel(js)
        part = torch.einsum("bpq,bq->p", k, weights[a:b, None] * r[a:b])
        total = part if total is None else total + part
    return total


def solve_second_kind(kernel: RowKernel, t: Tensor, y: Tensor, progress: bool = False,
                      desc: str = "volterra") -> Tensor:
    """SPEC §5.1, §11: solve f(t) = ∫_0^t K(t,s) (y − f(s)) ds on the grid t by implicit trapezoid
    product integration, (I + w_ii K(t_i,t_i)) f_i = Σ_{j<i} w_ij K(t_i,t_j) r_j + w_ii K(t_i,t_i) y.

    kernel(i, js) returns K(t_i, t_js) as [b, P, P]; t: [n + 1] with t[0] = 0; y: [P].
    Returns f: [n + 1, P] (f[0] = 0). The implicit diagonal keeps large steps stable.
    """
    n1, p = t.shape[0], y.shape[0]
    f = torch.zeros(n1, p, dtype=y.dtype, device=y.device)
    r = torch.zeros_like(f)
    r[0] = y
    h = torch.diff(t)
    w_hist = torch.zeros(n1, dtype=t.dtype, device=t.device)  # weights of past points, fixed once both neighbours exist
    eye = torch.eye(p, dtype=y.dtype, device=y.device)
    for i in tqdm(range(1, n1), desc=desc, disable=not progress, leave=False, mininterval=1.0):
        w_hist[i - 1] += h[i - 1] / 2
        hist = weighted_sum(lambda js: kernel(i, js), w_hist[:i], r[:i], p * p)
        w_ii = float(h[i - 1]) / 2
        k_ii = kernel(i, torch.tensor([i], device=t.device))[0]
        f[i] = torch.linalg.solve(eye + w_ii * k_ii, hist + w_ii * (k_ii @ y))
        r[i] = y - f[i]
        w_hist[i] += h[i - 1] / 2  # completes when step i+1 adds its half
    return f
