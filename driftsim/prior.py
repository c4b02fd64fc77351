"""Ornstein–Uhlenbeck statistics of the weights under decay and noise alone (SPEC §2)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import positive

__all__ = ["Prior"]


@dataclass(frozen=True)
class Prior:
    """Weight statistics of the Langevin dynamics with the loss removed.

    T: temperature (noise), sigma: prior std (regularisation), sigma0: initialisation std.
    Every weight follows dθ = −γ θ dt + √(2T) dB with γ = T/σ² and θ(0) ~ N(0, σ0²).
    """

    T: float
    sigma: float
    sigma0: float

    def __post_init__(self):
        for key in ("T", "sigma", "sigma0"):
            object.__setattr__(self, key, positive(f"dynamics.{key}", getattr(self, key)))

    @property
    def gamma(self) -> float:
        """γ = T/σ², the decay rate of the weights (SPEC §1.4)."""
        return self.T / self.sigma ** 2

    def cov(self, t: Tensor, s: Tensor) -> Tensor:
        """SPEC §2: C(t,s) = σ² e^(−γ|t−s|) + (σ0² − σ²) e^(−γ(t+s)); broadcast shape of t and s.

        Evaluated as σ0² e^(−γ(t+s)) + σ² e^(−γ|t−s|) (1 − e^(−2γ min(t,s))), which is exactly σ0² at
        t = s = 0 (relu kernels have infinite slope at equal times, so rounding there would show).
        """
        g = self.gamma
        fresh = -torch.expm1(-2 * g * torch.minimum(t, s))
        return self.sigma0 ** 2 * torch.exp(-g * (t + s)) + self.sigma ** 2 * torch.exp(-g * (t - s).abs()) * fresh

    def var(self, t: Tensor) -> Tensor:
        """SPEC §2: C(t,t) = σ² + (σ0² − σ²) e^(−2γt)."""
        return self.cov(t, t)

    def coefficients(self, dt: float) -> tuple[float, float]:
        """SPEC §2 exact transition over dt as (decay, std): (e^(−γdt), √(σ²(1 − e^(−2γdt))))."""
        return math.exp(-self.gamma * dt), self.sigma * math.sqrt(-math.expm1(-2 * self.gamma * dt))
