"""Drift metrics of an infinite population of hidden units, predicted from the two-time kernels (SPEC §3.1).

At infinite width the units of hidden layer l are independent draws of one Gaussian process over
(stimulus, time): unit i's pre-activation h_l,i(x,t) is centred Gaussian with covariance
Q_l(t,t',x,x') = C(t,t') K_{l−1}(t,t',x,x') (Q_1 = C x.x'/N0), during learning and during the
frozen-readout drift alike (learning moves each hidden weight by O(1/√N), so the representation drifts as
the prior does). Every population statistic is then an expectation over that process of the unit's
activity φ(h_l,i): E[φφ'] is the layer kernel K_l (SPEC §4 expectations), E[φ] the activation's mean.

- population-vector (PV) correlation between times t, t' (Pearson over units, mean over stimuli x):
  (E[φ(h)φ(h')] − E[φ(h)]E[φ(h')]) / √(Var φ(h) Var φ(h')), (h, h') at (x,t), (x,t');
- ensemble rate correlation: the same over units of the unit's mean over stimuli m_u(t) = mean_x φ_u(x,t);
- similarity at one time: the Pearson correlation over units between two stimuli's population vectors;
- the fixed ridge decoder and its decorrelated limit (SPEC §6.4), in :func:`fixed_decoder`;
- finite populations: :func:`sample_units` draws units from the process itself.

Inputs: stimuli x [X, N0]; times are absolute (a session at drift time τ_s after the freeze is t0 + τ_s).
``layer`` counts hidden layers from 1 (default the last, ``depth``). Results are float64, on x's device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..prior import Prior
from .kernels import KernelModel

__all__ = ["Moments", "layer_of", "moments", "pv_correlation", "stationary_pv_correlation"]

# pairs of times per batch of the kernel recursion: bounds its [pairs, X, X] temporaries to ~64 MB
_ENTRIES_PER_BATCH = 1 << 23


def layer_of(layer: int | None, depth: int) -> int:
    """The observed hidden layer: ``layer`` in 1..depth, or the last one when None; else a ValueError."""
    if layer is None:
        return depth
    if not isinstance(layer, int) or not 1 <= layer <= depth:
        raise ValueError(f"observe.layer={layer!r} is not allowed: a hidden layer 1..model.depth={depth} "
                         "(unset: the last)")
    return layer


def _as64(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or not torch.isfinite(x).all():
        raise ValueError(f"stimuli x must be a finite 2-D array [stimuli, input_dim]; got shape {tuple(x.shape)}")
    return x.to(torch.float64)


@dataclass(frozen=True)
class Moments:
    """First and second moments of a unit's activity φ(h_l) at (xa, t) and (xb, s), a batch of B time pairs.

    cross [B, p, q] = E[φ(h(xa,t)) φ(h(xb,s))] (the layer kernel K_l); mean_a [B, p], mean_b [B, q] = E[φ];
    second_a [B, p], second_b [B, q] = E[φ²].
    """
    cross: Tensor
    mean_a: Tensor
    mean_b: Tensor
    second_a: Tensor
    second_b: Tensor

    def covariance(self) -> Tensor:
        """Cov over units of φ(h(xa,t)) and φ(h(xb,s)): [B, p, q]."""
        return self.cross - self.mean_a[:, :, None] * self.mean_b[:, None, :]

    def variances(self) -> tuple[Tensor, Tensor]:
        """Var over units of φ(h(xa,t)) [B, p] and of φ(h(xb,s)) [B, q]."""
        return self.second_a - self.mean_a ** 2, self.second_b - self.mean_b ** 2


def moments(model: KernelModel, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, xa: Tensor, xb: Tensor) -> Moments:
    """SPEC §3.1, §4: the activity moments of layer ``model.depth`` for weight statistics C(t,s), C(t,t),
    C(s,s) (each [B]) between the times; xa [p, N0], xb [q, N0] → :class:`Moments`."""
    act: Activation = model.activation
    q_a = model.variances(c_tt, (xa * xa).sum(1) / xa.shape[1])[-1]
    q_b = model.variances(c_ss, (xb * xb).sum(1) / xb.shape[1])[-1]
    cross = model.correlated(c_ts, c_tt, c_ss, xa, xb).k
    return Moments(cross, act.mean(q_a), act.mean(q_b), act.expect_diag(q_a), act.expect_diag(q_b))


def _pv(m: Moments) -> Tensor:
    """PV correlation per time pair [B] from moments of the same stimuli at both times (xa = xb)."""
    cov = torch.diagonal(m.covariance(), dim1=1, dim2=2)
    va, vb = m.variances()
    return (cov / (va * vb).sqrt()).mean(1)


def _batches(n: int, points: int):
    """Slices of range(n) whose [len, points, points] kernels stay within _ENTRIES_PER_BATCH entries."""
    step = max(1, _ENTRIES_PER_BATCH // max(points * points, 1))
    return (slice(a, min(a + step, n)) for a in range(0, n, step))


def stationary_pv_correlation(x: Tensor, *, depth: int, activation: str | Activation, sigma: float,
                              rho: Tensor, layer: int | None = None) -> Tensor:
    """Infinite-population PV correlation of layer ``layer`` between two times at weight equilibrium.

    The weights have C(t,t) = C(t',t') = σ² and C(t,t') = σ² ρ, ρ = e^(−γ|t−t'|) (SPEC §2 once the
    transient has faded, t, t' ≫ 1/γ); the PV correlation is (E[φφ'] − E[φ]E[φ'])/Var φ with the 2×2
    Gaussian of the two-time recursion (SPEC §3.1, §4), averaged over the stimuli.

    Parameters
    ----------
    x : Tensor [X, N0]
        Stimuli.
    depth : int
        Hidden layers L of the network (the recursion runs to ``layer``).
    activation : str or Activation
        φ.
    sigma : float
        Prior std σ.
    rho : Tensor [R]
        Weight correlations ρ ∈ [−1, 1] between the two times.
    layer : int, optional
        Observed hidden layer 1..depth (default the last).

    Returns
    -------
    Tensor [R]
        PV correlation at each ρ (float64, on x's device); 1 at ρ = 1.
    """
    x = _as64(x)
    rho = torch.as_tensor(rho, dtype=torch.float64, device=x.device).reshape(-1)
    if not bool(((rho >= -1) & (rho <= 1)).all()):
        raise ValueError(f"rho must lie in [-1, 1] (a weight correlation); got {rho.tolist()[:8]}")
    # the prior only fixes σ here: the weight statistics are given, not taken from its OU process
    model = KernelModel(activation, layer_of(layer, depth), Prior(1.0, sigma, sigma))
    s2 = model.prior.sigma ** 2
    out = torch.empty_like(rho)
    for sl in _batches(len(rho), len(x)):
        var = torch.full_like(rho[sl], s2)
        out[sl] = _pv(moments(model, s2 * rho[sl], var, var, x, x))
    return out


def _pairs(times: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered pairs (t_i, t_j) of S times, row-major: two [S²] tensors."""
    ti, tj = torch.meshgrid(times, times, indexing="ij")
    return ti.reshape(-1), tj.reshape(-1)


def _times(times: Tensor, device: torch.device) -> Tensor:
    t = torch.as_tensor(times, dtype=torch.float64, device=device).reshape(-1)
    if len(t) == 0 or not bool(torch.isfinite(t).all() & (t >= 0).all()):
        raise ValueError(f"times must be a non-empty 1-D array of finite absolute times >= 0; got {t.tolist()[:8]}")
    return t


def pv_correlation(x: Tensor, *, depth: int, activation: str | Activation, prior: Prior, times: Tensor,
                   layer: int | None = None) -> Tensor:
    """Infinite-population PV correlation between every two session times, under the prior's weight process.

    Weight statistics C(t,t') of SPEC §2 (σ0 ≠ σ allowed: the transient makes the sessions' variances
    differ), the 2×2 Gaussian of the two-time recursion (SPEC §3.1) per stimulus, Pearson over units,
    mean over stimuli.

    Parameters
    ----------
    x : Tensor [X, N0]
        Stimuli.
    depth, activation, prior
        The architecture and the weights' prior (SPEC §1.1, §2).
    times : Tensor [S]
        Absolute session times (t0 + τ_s for sessions τ_s after a freeze at t0).
    layer : int, optional
        Observed hidden layer 1..depth (default the last).

    Returns
    -------
    Tensor [S, S]
        Symmetric, ones on the diagonal (float64, on x's device).
    """
    x = _as64(x)
    t = _times(times, x.device)
    model = KernelModel(activation, layer_of(layer, depth), prior)
    ti, tj = _pairs(t)
    out = torch.empty_like(ti)
    for sl in _batches(len(ti), len(x)):
        a, b = ti[sl], tj[sl]
        out[sl] = _pv(moments(model, prior.cov(a, b), prior.var(a), prior.var(b), x, x))
    return out.reshape(len(t), len(t))
