"""Layer recursions of the infinite-width kernels (SPEC §3), batched over time pairs.

Every kernel is built by one recursion over layers, ``_propagate``, that takes the temporal
correlation C(t,s) of the weights between the two times and the per-point layer variances at each
time. The NNGP and NTK are its one-time special cases (C ≡ σ² and C ≡ σ0²); the NDK, the frozen-readout
kernel and the mean kernel are its two-time uses. Shapes: a batch of B time pairs, p and q points;
results are [B, p, q] (or [p, q] for one-time kernels), in the dtype and on the device of the inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from ..activations import Activation, get_activation
from ..prior import Prior
from ..validation import check_depth

__all__ = ["KernelModel", "TwoTime"]


@dataclass(frozen=True)
class TwoTime:
    """Last-layer two-time kernels (SPEC §3.1–3.2), each [B, p, q]: K_L, K'_L and G_L."""
    k: Tensor
    kp: Tensor
    g: Tensor


@dataclass(frozen=True)
class KernelModel:
    """A deep fully connected architecture (depth L, activation φ) under the weight prior of SPEC §2.

    Parameters
    ----------
    activation : str or Activation
        φ, by name or as an object (stored as the object).
    depth : int
        Number of hidden layers L ≥ 1.
    prior : Prior
        Weight prior (T, σ, σ0).

    Raises
    ------
    ValueError
        For an unknown activation or a depth that is not an integer ≥ 1.
    """

    activation: Union[str, Activation]
    depth: int
    prior: Prior

    def __post_init__(self):
        object.__setattr__(self, "activation", get_activation(self.activation))
        check_depth(self.depth)

    @property
    def keys(self) -> str:
        """The config keys and values that set this model's numbers, for the messages of numerical failures."""
        p = self.prior
        return (f"dynamics.T={p.T:g}, dynamics.sigma={p.sigma:g}, dynamics.sigma0={p.sigma0:g}, "
                f"model.depth={self.depth}, model.activation={self.activation.name}")

    # --- per-point layer variances -------------------------------------------------------------
    def variances(self, c_tt: Tensor, sqnorm: Tensor) -> list[Tensor]:
        """SPEC §3.1 diagonals Q_l(t,t,x,x) of the layer kernels.

        Parameters
        ----------
        c_tt : Tensor
            [B] weight variances C(t,t).
        sqnorm : Tensor
            [p] the values |x|²/N0.

        Returns
        -------
        list of Tensor
            [Q_1, ..., Q_L], each [B, p].
        """
        q = c_tt[:, None] * sqnorm[None, :]
        out = [q]
        for _ in range(self.depth - 1):
            q = c_tt[:, None] * self.activation.expect_diag(q)
            out.append(q)
        return out

    # --- the one recursion ---------------------------------------------------------------------
    def _propagate(self, c_ts: Tensor, qa: list[Tensor], qb: list[Tensor], dot: Tensor) -> TwoTime:
        """SPEC §3.1–3.2: Q_1 = C x.x'/N0, K_l, K'_l from §4, Q_{l+1} = C K_l, G_{l+1} = K_l + C K'_l G_l.

        c_ts: [B] weight correlation between the two times; dot = x.x'/N0 and the layer variances qa[l], qb[l]
        at the first and second time, broadcasting against each other behind the batch: dot [p, q] with
        qa[l] [B, p, 1], qb[l] [B, 1, q] (every pair of points), or dot [p] with qa[l], qb[l] [B, p] (each
        point with itself).
        """
        c = c_ts.reshape(-1, *(1,) * dot.ndim)
        cov = c * dot
        g = dot.expand_as(cov)
        for layer in range(self.depth):
            k, kp = self.activation.expect(qa[layer], qb[layer], cov)
            if layer + 1 < self.depth:
                # in place: this layer's K' and K are not needed once G and the next covariance are formed
                g = kp.mul_(c).mul_(g).add_(k)
                cov = k.mul_(c)
        return TwoTime(k=k, kp=kp, g=g)

    def two_time(self, t: Tensor, s: Tensor, xa: Tensor, xb: Tensor) -> TwoTime:
        """SPEC §3.1–3.2 two-time kernels K_L, K'_L, G_L between (xa at times t) and (xb at times s).

        Parameters
        ----------
        t, s : Tensor
            [B] pairs of times.
        xa, xb : Tensor
            [p, N0] and [q, N0] inputs.

        Returns
        -------
        TwoTime
            k, kp, g, each [B, p, q].
        """
        return self.correlated(self.prior.cov(t, s), self.prior.var(t), self.prior.var(s), xa, xb)

    def correlated(self, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, xa: Tensor, xb: Tensor) -> TwoTime:
        """SPEC §3.1–3.2 two-time kernels from given weight statistics: C(t,s), C(t,t), C(s,s), each [B].

        For weights that are not the prior's OU process (e.g. the stationary correlation σ²ρ of a fitted
        drift rate); ``two_time`` is this with the prior's C. xa: [p, N0]; xb: [q, N0] → [B, p, q].
        """
        return self._pairs(c_ts, c_tt, c_ss, xa, xb)

    def correlated_diagonal(self, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, x: Tensor) -> TwoTime:
        """The diagonals of ``correlated(c_ts, c_tt, c_ss, x, x)``, each point at the two times with itself,
        without the off-diagonal pairs: x [p, N0] → k, kp, g [B, p]."""
        sqnorm = (x * x).sum(1) / x.shape[1]
        return self._propagate(c_ts, self.variances(c_tt, sqnorm), self.variances(c_ss, sqnorm), sqnorm)

    def _pairs(self, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, xa: Tensor, xb: Tensor) -> TwoTime:
        """The recursion between every point of xa [p, N0] and of xb [q, N0]: [B, p, q]."""
        n0 = xa.shape[1]
        qa = [q[:, :, None] for q in self.variances(c_tt, (xa * xa).sum(1) / n0)]
        qb = [q[:, None, :] for q in self.variances(c_ss, (xb * xb).sum(1) / n0)]
        return self._propagate(c_ts, qa, qb, xa @ xb.T / n0)

    def ndk_from(self, t: Tensor, s: Tensor, tt: TwoTime) -> Tensor:
        """SPEC §3.2 NDK K_d = e^(−γ(t−s)) [K_L + C(t,s) K'_L G_L] from already computed two-time kernels.

        Parameters
        ----------
        t, s : Tensor
            [B] pairs of times, t ≥ s.
        tt : TwoTime
            ``two_time(t, s, xa, xb)``.

        Returns
        -------
        Tensor
            [B, p, q].
        """
        c = self.prior.cov(t, s)[:, None, None]
        return torch.exp(-self.prior.gamma * (t - s))[:, None, None] * (tt.k + c * tt.kp * tt.g)

    # --- one-time special cases ----------------------------------------------------------------
    def _one_time(self, c: float, xa: Tensor, xb: Tensor) -> TwoTime:
        cc = torch.full((1,), c, dtype=xa.dtype, device=xa.device)
        tt = self._pairs(cc, cc, cc, xa, xb)
        return TwoTime(k=tt.k[0], kp=tt.kp[0], g=tt.g[0])

    def nngp(self, xa: Tensor, xb: Tensor) -> Tensor:
        """SPEC §3.3 NNGP kernel K_gp = σ² K_L with C ≡ σ² in every layer.

        Parameters
        ----------
        xa, xb : Tensor
            [p, N0] and [q, N0] inputs.

        Returns
        -------
        Tensor
            [p, q].
        """
        s2 = self.prior.sigma ** 2
        return s2 * self._one_time(s2, xa, xb).k

    def ntk(self, xa: Tensor, xb: Tensor) -> Tensor:
        """SPEC §3.3 NTK K_ntk = K_d(0,0) = K_L + σ0² K'_L G_L with C ≡ σ0²: [p, q] for the arguments of
        ``nngp``."""
        s02 = self.prior.sigma0 ** 2
        tt = self._one_time(s02, xa, xb)
        return tt.k + s02 * tt.kp * tt.g

    def nngp_ntk(self, xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
        """``(nngp(xa, xb), ntk(xa, xb))``, each [p, q]: from one layer recursion when σ0 = σ (both kernels use
        C ≡ σ², K_gp = σ² K_L of the NTK's pass), else from two."""
        s2, s02 = self.prior.sigma ** 2, self.prior.sigma0 ** 2
        if s02 != s2:
            return self.nngp(xa, xb), self.ntk(xa, xb)
        tt = self._one_time(s2, xa, xb)
        return s2 * tt.k, tt.k + s02 * tt.kp * tt.g

    def prior_cov(self, t: Tensor, s: Tensor, xa: Tensor, xb: Tensor) -> Tensor:
        """SPEC §3.1 output prior covariance K_GP(t,s) = C(t,s) K_L(t,s): [B, p, q] for the arguments of
        ``two_time``."""
        return self.prior.cov(t, s)[:, None, None] * self.two_time(t, s, xa, xb).k

    # --- drift ---------------------------------------------------------------------------------
    def last_layer_mean(self, c_tt: Tensor, x: Tensor) -> Tensor:
        """SPEC §6.4 m_t(x) = E[φ(h_L(x,t))], Var h_L = Q_L(t,t,x,x).

        Parameters
        ----------
        c_tt : Tensor
            [B] weight variances C(t,t).
        x : Tensor
            [p, N0] inputs.

        Returns
        -------
        Tensor
            [B, p].
        """
        q_last = self.variances(c_tt, (x * x).sum(1) / x.shape[1])[-1]
        return self.activation.mean(q_last)

    def ntk_diagonal(self, x: Tensor, chunk: int = 256) -> Tensor:
        """K_ntk(x_i, x_i): [p], in blocks of ``chunk`` points (no [p, p] array)."""
        return torch.cat([torch.diagonal(self.ntk(x[i:i + chunk], x[i:i + chunk])) for i in range(0, x.shape[0], chunk)])

    def max_ntk_eigenvalue(self, x: Tensor) -> float:
        """λ_max(K_ntk) on x: sets the time scale of the gradient phase (SPEC §5.2, §11).

        Parameters
        ----------
        x : Tensor
            [p, N0] training inputs.

        Returns
        -------
        float
        """
        return float(torch.linalg.eigvalsh(self.ntk(x, x)).max())

