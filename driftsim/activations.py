"""Activations and their Gaussian expectations over a 2x2 covariance (SPEC §4).

One :class:`Activation` object serves both views of a network: ``networks.py`` calls ``phi`` and
``dphi`` on finite layers, ``kernels.py`` calls ``expect``, ``expect_diag`` and ``mean`` in the
infinite-width recursions. Closed forms exist for ``linear``, ``relu`` and ``erf``; every other
activation uses a 2-D Gauss–Hermite rule on the Cholesky factor of the covariance.

Quadrature accuracy (measured against the closed forms for variances 0.1–4, tests/test_activations.py):
smooth φ converge geometrically — erf 4e-7 relative at 48 nodes per axis, 1e-9 at the default 64,
5e-13 at 96; relu's kink limits it to first order — 3e-2 relative at 48 nodes, 7e-3 at 200 — so the
closed forms are used for relu, erf and linear. A quadrature kernel costs nodes² evaluations per entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .validation import require

__all__ = ["Activation", "get_activation", "ACTIVATIONS", "QUADRATURE_NODES"]

QUADRATURE_NODES = 64
# entries per quadrature block: bounds the [entries, nodes, nodes] temporaries to ~100 MB
QUADRATURE_BLOCK = 2048


def _hermite_rule(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes z and weights w with E[g(Z)] ≈ Σ w g(z) for Z ~ N(0, 1) (Gauss–Hermite, probabilists')."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2.0 * math.pi)
    return (torch.as_tensor(z, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device))


@dataclass(frozen=True)
class Activation:
    """φ with its derivative and its Gaussian expectations.

    ``expect(qa, qb, c)`` returns (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) ~ N(0, [[qa, c], [c, qb]]);
    ``expect_diag(q)`` returns E[φ(u)²] for u ~ N(0, q); ``mean(q)`` returns E[φ(u)]. Inputs are
    broadcastable tensors of any shape; outputs take their broadcast shape, dtype and device.
    ``odd`` marks φ(−u) = −φ(u), for which E[φ] ≡ 0 and the decorrelated mean kernel vanishes.
    """

    name: str
    phi: Callable[[Tensor], Tensor]
    dphi: Callable[[Tensor], Tensor]
    closed_form: Optional[Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]] = None
    closed_diag: Optional[Callable[[Tensor], Tensor]] = None
    closed_mean: Optional[Callable[[Tensor], Tensor]] = None
    odd: bool = False
    nodes: int = QUADRATURE_NODES

    def expect(self, qa: Tensor, qb: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """SPEC §4: (K, K') = (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) over the 2x2 covariance [[qa, c], [c, qb]]."""
        if self.closed_form is not None:
            return self.closed_form(qa, qb, c)
        return self.quadrature(qa, qb, c)

    def quadrature(self, qa: Tensor, qb: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """SPEC §4 by 2-D Gauss–Hermite quadrature: u = √qa z1, v = (c/√qa) z1 + √(qb − c²/qa) z2."""
        qa, qb, c = torch.broadcast_tensors(qa, qb, c)
        shape = qa.shape
        z, w = _hermite_rule(self.nodes, qa.dtype, qa.device)
        ww = w[:, None] * w[None, :]
        k, kp = torch.empty(qa.numel(), dtype=qa.dtype, device=qa.device), torch.empty_like(qa.reshape(-1))
        for a in range(0, qa.numel(), QUADRATURE_BLOCK):
            sl = slice(a, a + QUADRATURE_BLOCK)
            sa = qa.reshape(-1)[sl].clamp_min(0).sqrt()
            cc = c.reshape(-1)[sl]
            slope = torch.where(sa > 0, cc / sa.clamp_min(1e-300), torch.zeros_like(cc))
            rest = (qb.reshape(-1)[sl] - slope * slope).clamp_min(0).sqrt()
            u = sa[:, None] * z  # [b, n]
            v = slope[:, None, None] * z[:, None] + rest[:, None, None] * z[None, :]  # [b, n(z1), n(z2)]
            k[sl] = (self.phi(u)[:, :, None] * self.phi(v) * ww).sum((-2, -1))
            kp[sl] = (self.dphi(u)[:, :, None] * self.dphi(v) * ww).sum((-2, -1))
        return k.reshape(shape), kp.reshape(shape)

    def expect_diag(self, q: Tensor) -> Tensor:
        """SPEC §4 table, column E[φ(u)²] for u ~ N(0, q)."""
        if self.closed_diag is not None:
            return self.closed_diag(q)
        z, w = _hermite_rule(self.nodes, q.dtype, q.device)
        return (self.phi(q.clamp_min(0).sqrt()[..., None] * z) ** 2 * w).sum(-1)

    def mean(self, q: Tensor) -> Tensor:
        """SPEC §4 table, column E[φ(u)] for u ~ N(0, q) (the decorrelated mean kernel's factor, §6.4)."""
        if self.odd:
            return torch.zeros_like(q)
        if self.closed_mean is not None:
            return self.closed_mean(q)
        z, w = _hermite_rule(self.nodes, q.dtype, q.device)
        return (self.phi(q.clamp_min(0).sqrt()[..., None] * z) * w).sum(-1)

    @classmethod
    def custom(cls, name: str, phi: Callable[[Tensor], Tensor], dphi: Callable[[Tensor], Tensor],
               odd: bool = False, nodes: int = QUADRATURE_NODES) -> "Activation":
        """A user's torch-callable φ with its derivative; its kernels come from quadrature."""
        return cls(name=name, phi=phi, dphi=dphi, odd=odd, nodes=nodes)


# --- closed forms (SPEC §4 table) -------------------------------------------------------------

def _linear_expect(qa: Tensor, qb: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    qa, qb, c = torch.broadcast_tensors(qa, qb, c)
    return c.clone(), torch.ones_like(c)


def _relu_expect(qa: Tensor, qb: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    # the square roots and their inverses on the variances (one per point), then in-place ops on the
    # [B, p, q] arrays: half the full-size temporaries, the kernels' largest cost (benchmarks/README.md "Scale")
    sa, sb = qa.clamp_min(0).sqrt(), qb.clamp_min(0).sqrt()
    ia = torch.where(sa > 0, 1 / sa.clamp_min(1e-300), torch.zeros_like(sa))
    ib = torch.where(sb > 0, 1 / sb.clamp_min(1e-300), torch.zeros_like(sb))
    cos = (c * ia * ib).clamp_(-1.0, 1.0)  # 0 where a variance is 0
    kp = torch.arccos(cos).neg_().add_(math.pi)  # π − θ
    k = torch.addcmul(torch.sqrt(torch.clamp_(1 - cos * cos, min=0.0)), kp, cos).mul_(sa * sb).div_(2 * math.pi)
    return k, kp.div_(2 * math.pi)


def _erf_expect(qa: Tensor, qb: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    da, db = 1 + 2 * qa, 1 + 2 * qb
    k = (2 / math.pi) * torch.arcsin((2 * c / (da * db).sqrt()).clamp(-1.0, 1.0))
    kp = (4 / math.pi) * (da * db - 4 * c * c).clamp_min(1e-300).rsqrt()
    return k, kp


def _heaviside(u: Tensor) -> Tensor:
    return torch.gt(u, 0, out=torch.empty_like(u))  # straight into u's dtype: no bool temporary


def _gelu_grad(u: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    return cdf + u * torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation("linear", lambda u: u, torch.ones_like, _linear_expect,
                         closed_diag=lambda q: q.clone(), odd=True),
    "relu": Activation("relu", torch.relu, _heaviside, _relu_expect, closed_diag=lambda q: q / 2,
                       closed_mean=lambda q: (q.clamp_min(0) / (2 * math.pi)).sqrt()),
    "erf": Activation("erf", torch.erf, lambda u: (2 / math.sqrt(math.pi)) * torch.exp(-u * u), _erf_expect,
                      closed_diag=lambda q: (2 / math.pi) * torch.arcsin(2 * q / (1 + 2 * q)), odd=True),
    "tanh": Activation("tanh", torch.tanh, lambda u: 1 - torch.tanh(u) ** 2, odd=True),
    "gelu": Activation("gelu", torch.nn.functional.gelu, _gelu_grad),
    "softplus": Activation("softplus", torch.nn.functional.softplus, torch.sigmoid),
    "sin": Activation("sin", torch.sin, torch.cos, odd=True),
}


def get_activation(name: "str | Activation") -> Activation:
    """The activation called ``name`` (or ``name`` itself if it already is an Activation)."""
    if isinstance(name, Activation):
        return name
    require(name in ACTIVATIONS, "model.activation", name,
            f"one of {sorted(ACTIVATIONS)} (or pass Activation.custom(name, phi, dphi))")
    return ACTIVATIONS[name]
