"""Graded time grids, exact exponential weights of linear interpolants (one and two variables), and the
product-integration solver of matrix Volterra equations whose kernel is a sum of exponentials in the lag
(SPEC §5.1, §11; README, numerical method). The trapezoid solver of SPEC §11 is ``reference.py``'s.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..validation import positive

__all__ = ["graded_grid", "exponential_weights", "exponential_pair_weights", "solve_separable"]


def graded_grid(t_end: float, h_first: float, h_max: float, growth: float,
                include: Optional[Tensor] = None) -> Tensor:
    """SPEC §11 time grid 0 = t_0 < ... < t_n = t_end whose step h(t) = clip(growth·t, h_first, h_max).

    Fine steps resolve the fast gradient phase, geometric growth follows slower relaxations in log time,
    and h_max bounds the step in the diffusive phase.

    Parameters
    ----------
    t_end : float
        Last time of the grid.
    h_first, h_max : float
        Smallest and largest step.
    growth : float
        Step per unit time, h = growth·t between the two.
    include : Tensor, optional
        Times in [0, t_end] (recorded times, t0) merged in exactly.

    Returns
    -------
    Tensor
        float64 [n + 1], strictly increasing.

    Raises
    ------
    ValueError
        If a step parameter is not a positive finite number, or a time to include lies outside [0, t_end].
    """
    for name, v in (("t_end", t_end), ("h_first", h_first), ("h_max", h_max), ("growth", growth)):
        positive(f"graded_grid: {name}", v)
    points = [0.0]
    t = 0.0
    while t < t_end:
        t = min(t + min(max(growth * t, h_first), h_max), t_end)
        points.append(t)
    grid = torch.tensor(points, dtype=torch.float64)
    if include is not None and include.numel():
        extra = include.to(torch.float64).flatten()
        if extra.min() < 0 or extra.max() > t_end * (1 + 1e-12):
            raise ValueError(f"graded_grid: times to include must lie in [0, t_end={t_end!r}]")
        grid = torch.cat([grid, extra.clamp(max=t_end)])
        grid = torch.unique(grid)  # sorted
        # drop points closer than 1e-12·max(t_end, 1) to the previous one, so no step is degenerate
        keep = torch.ones_like(grid, dtype=torch.bool)
        keep[1:] = torch.diff(grid) > 1e-12 * max(t_end, 1.0)
        grid = grid[keep]
    return grid


def exponential_weights(mu: Tensor, h: "float | Tensor") -> tuple[Tensor, Tensor, Tensor]:
    """Exact integrals over one step of length h for a rate μ and a linear interpolant g(s) (the product
    integration of SPEC §5.1 in README's numerical method): ∫_{t−h}^{t} e^(−μ(t−s)) g(s) ds = w0 g(t−h) + w1 g(t).

    Parameters
    ----------
    mu : Tensor
        Rates μ ≥ 0.
    h : float or Tensor
        Step lengths > 0, broadcasting with mu: e.g. mu [1, K] and the steps h [n, 1] give [n, K] for a
        whole grid.

    Returns
    -------
    decay, w0, w1 : Tensor
        e^(−μh) and the weights of the step's left and right ends, of the broadcast shape.
    """
    x = mu * h
    decay = torch.exp(-x)
    small = x < 1e-4
    xs = torch.where(small, torch.ones_like(x), x)
    phi1 = -torch.expm1(-xs) / xs  # (1 − e^(−x))/x
    w1 = torch.where(small, h * (0.5 - x / 6 + x * x / 24), h * (1 - phi1) / xs)
    w0 = torch.where(small, h * (0.5 - x / 3 + x * x / 8), h * (phi1 - decay) / xs)
    return decay, w0, w1


# P_ab(w) = ∫_w^1 φ_a(s) φ_b(s − w) ds for the hats φ_0 = 1 − s, φ_1 = s, as coefficients of w^0..w^3
_PAIR_POLY = torch.tensor([[[1 / 3, -1 / 2, 0, 1 / 6], [1 / 6, -1 / 2, 1 / 2, -1 / 6]],
                           [[1 / 6, 1 / 2, -1 / 2, -1 / 6], [1 / 3, -1 / 2, 0, 1 / 6]]], dtype=torch.float64)


def exponential_pair_weights(mu: Tensor, h: Tensor) -> Tensor:
    """Exact double integrals over one step for two linear interpolants g, g' (ends 0 = left, 1 = right):
    ∫_0^h g(x) ∫_0^x e^(−μ(x−y)) g'(y) dy dx = Σ_ab W[..., a, b] g_a g'_b, so that a kernel Σ_k c_k e^(−μ_k|x−y|)
    is integrated exactly between piecewise-linear functions (the covariance of SPEC §10, covariance.py (L5)).
    With w = x − y the integral is h² Σ_i P_ab[i] ∫_0^1 w^i e^(−μhw) dw.

    Parameters
    ----------
    mu : Tensor
        Rates μ ≥ 0.
    h : Tensor
        Step lengths > 0, broadcasting with mu as in exponential_weights.

    Returns
    -------
    Tensor
        W [..., 2, 2] of the broadcast shape.
    """
    z = mu * h
    small = z < 1.0
    # ∫_0^1 w^i e^(−zw) dw: its Taylor series for z < 1 (25 terms: 1/25! is far below rounding), else the
    # upward recursion E_i = (i E_{i−1} − e^(−z))/z, which gains at most i!/z^i ≤ 6 in error there
    zs = torch.where(small, z, torch.zeros_like(z))
    zl = torch.where(small, torch.ones_like(z), z)
    terms = [(-zs) ** n / float(math.factorial(n)) for n in range(25)]
    series = [sum(tn / (n + i + 1) for n, tn in enumerate(terms)) for i in range(4)]
    rec, ez = [-torch.expm1(-zl) / zl], torch.exp(-zl)
    for i in range(1, 4):
        rec.append((i * rec[-1] - ez) / zl)
    moments = torch.stack([torch.where(small, a, b) for a, b in zip(series, rec)], -1)
    return (h * h)[..., None, None] * torch.einsum("...i,abi->...ab", moments, _PAIR_POLY.to(moments))


# a rate whose decay over a step is below this keeps no memory of the step before (rounding: 1e-16)
FORGET = 1e-17
# from the grid point on which every ℓ_m(t_i) stays within this of its last value (u = e^(−2γt) ≈ 0: the weights'
# variance has relaxed) the kernel is taken not to depend on u (the mean predictor of the scale problem at P = 100,
# σ0 = σ/2 and σ/10, moved by 7e-9 and 1e-8 of its scale against LATE_ELL = 1e-12 (1.2e-6 and 1.6e-6 at 1e-3);
# ℓ_m's slopes at u = 0 are ~M², so u is far smaller still;
# tests/theory/test_mean.py::test_the_late_phase_on_one_kernel_keeps_the_predictor)
LATE_ELL = 1e-5


def _late_start(ell: Tensor) -> int:
    """The first grid index from which every row of ell [n + 1, M] is within LATE_ELL of the last (n: none)."""
    if ell.shape[1] == 1:
        return ell.shape[0] - 1
    far = torch.nonzero((ell - ell[-1]).abs().amax(1) > LATE_ELL)
    return min(int(far[-1]) + 1, ell.shape[0] - 1) if far.numel() else 0


class _March:
    """Product-integration steps of ``solve_separable`` over one stretch of the grid, for coefficients
    coef [K, M, P, P] (a view is read in place) with ℓ [n + 1, M] and an optional forcing g(i) [P] added to the
    history (the decaying sums of an earlier stretch)."""

    def __init__(self, coef: Tensor, ell: Tensor, steps: tuple, y: Tensor):
        self.k, self.m, p = coef.shape[:3]
        self.coef, self.ell, self.y, (self.decays, self.w0s, self.w1s, self.same) = coef, ell, y, steps
        # the history product's layout, one copy; the rates' weighted sums read coef per u-node in place (a
        # strided [K, P²] matrix each: coef may be a view of the expansion's training rows)
        self.coef_z = coef.permute(2, 0, 1, 3).reshape(p, -1)
        self.eye = torch.eye(p, dtype=y.dtype, device=y.device)
        # ℓ constant: one u-node, or the late stretch (σ0 = σ, or u ≈ 0)
        self.constant_ell = self.m == 1 and bool((ell == ell[0]).all())

    def run(self, first: int, last: int, z: Tensor, r_prev: Tensor, f: Tensor, keep: set, forcing=None,
            bar=None) -> tuple[Tensor, Tensor, dict]:
        """Steps first..last (t_{i−1} → t_i) from the running sums z [K, M, P] and residual r_prev at t_{first−1};
        f[i] filled. Returns z and r at t_last and {i: z_i} for i in ``keep``."""
        k, m, p, ell, y = self.k, self.m, self.y.shape[0], self.ell, self.y
        kept, sums, factors = {}, None, None
        for i in range(first, last + 1):
            decay, w0 = self.decays[i - 1], self.w0s[i - 1]
            w_new = self.w1s[i - 1][:, None] * ell[i][None, :]  # [K, M]
            if not (self.same[i] and sums is not None):
                ks = int((decay > FORGET).sum())  # μ ascending: the slow rates come first
                weights = torch.stack([self.w1s[i - 1], torch.where(torch.arange(k, device=w0.device) >= ks, w0, 0.0)])
                # A_m and B_m from one pass over the coefficients
                sums = torch.stack([weights @ self.coef[:, j].reshape(k, p * p) for j in range(m)], 1).view(2, m, p, p)
                factors = None
            if factors is None or not self.constant_ell:
                s_i = torch.tensordot(ell[i], sums[0], 1)
                factors = (*torch.linalg.lu_factor(self.eye + s_i), s_i @ y)
            lu, pivots, s_y = factors
            zs = decay[:ks, None, None] * z[:ks] + (w0[:ks, None] * ell[i - 1][None, :])[..., None] * r_prev
            rhs = self.coef_z[:, : ks * m * p] @ zs.reshape(-1) + s_y
            if ks < k:
                rhs = rhs + ell[i - 1] @ (sums[1] @ r_prev)
            if forcing is not None:
                rhs = rhs + forcing(i)
            f[i] = torch.linalg.lu_solve(lu, pivots, rhs[:, None])[:, 0]
            r = y - f[i]
            z[:ks] = zs + w_new[:ks, :, None] * r
            if ks < k and (i in keep or i == last or not self.same[i + 1]):
                z[ks:] = (w0[ks:, None] * ell[i - 1][None, :])[..., None] * r_prev + w_new[ks:, :, None] * r
            r_prev = r
            if i in keep:
                kept[i] = z.clone()
            if bar is not None:
                bar.update()
        return z, r_prev, kept


def solve_separable(coef: Tensor, mu: Tensor, ell: Tensor, t: Tensor, y: Tensor, keep: Tensor,
                    progress: bool = False, desc: str = "volterra") -> tuple[Tensor, Tensor]:
    """SPEC §5.1, f(t) = ∫_0^t K(t,s) r(s) ds with the residual r = y − f, for a separable kernel
    K(t,s) = Σ_{k,m} coef[k,m] e^(−μ_k (t−s)) ℓ_m(s), by product integration: r is interpolated linearly
    on each step and the exponentials are integrated exactly, through the running sums
    z_km(t) = ∫_0^t e^(−μ_k(t−s)) ℓ_m(s) r(s) ds; the new point is implicit,
    (I + S_i) f_i = Σ coef (decay z + w0 ℓ r_{i−1}) + S_i y with S_i = Σ w1 ℓ_m(t_i) coef.
    Cost O(n K M P²), memory O(K M P²) (one copy of coef): no (n² × P²) array.

    Parameters
    ----------
    coef : Tensor
        [K, M, P, P] coefficients.
    mu : Tensor
        [K] rates.
    ell : Tensor
        [n + 1, M] ℓ_m(t_i).
    t : Tensor
        [n + 1] grid with t[0] = 0.
    y : Tensor
        [P] labels.
    keep : Tensor
        Distinct indices of grid points whose running sums are returned.
    progress : bool
        Show a progress bar, labelled ``desc``.
    desc : str
        Label of the progress bar.

    Returns
    -------
    f : Tensor
        [n + 1, P] the solution on the grid (f[0] = 0).
    z : Tensor
        [len(keep), K, M, P] the running sums at the grid points of ``keep``.
    """
    n1, p = t.shape[0], y.shape[0]
    k, m = coef.shape[:2]
    f = torch.zeros(n1, p, dtype=y.dtype, device=y.device)
    z = torch.zeros(k, m, p, dtype=y.dtype, device=y.device)
    wanted = [int(i) for i in keep.tolist()]
    h = torch.diff(t)
    # every step's weights at once, [n, K]; same[i]: step i (t[i-1] → t[i]) as long as step i − 1. On the grid's
    # repeated steps (most of a graded grid: the diffusive phase's cap) the rates' sums per u-node,
    # A_m = Σ_k w1_k coef[k, m], serve every step, and S_i = Σ_m ℓ_m(t_i) A_m costs M P² instead of K M P²; with
    # ℓ constant I + S_i is the same too and its LU factors serve every such step (P³ → P²). The rates whose
    # e^(−μh) is below FORGET keep no memory beyond the step (their z is w0 ℓ r_prev + w1 ℓ r to rounding): their
    # part of the history product is Σ_m ℓ_m(t_{i−1}) B_m r_prev with B_m = Σ_{k fast} w0_k coef[k, m], and only
    # the slow rates' sums are carried (about half of K on the cap); the fast ones' z is rebuilt where it is
    # returned or the next step differs.
    same = torch.zeros(n1 + 1, dtype=torch.bool)
    same[2:n1] = (h[1:] == h[:-1]).cpu()
    steps = (*exponential_weights(mu[None, :], h[:, None]), same)
    # Once u ≈ 0 (σ0 ≠ σ, t ≫ 1/γ) ℓ is constant: the sums z_km(t) = e^(−μ_k(t−t*)) z_km(t*) + ℓ_m ζ_k(t) split
    # into the decaying sums of t* (a forcing Σ_k e^(−μ_k(t−t*)) v_k, v_k = Σ_m coef[k, m] z_km(t*)) and those
    # of the one kernel Σ_m ℓ_m coef[k, m] from t* on: the late steps cost as those of σ0 = σ.
    late = _late_start(ell)
    bar = tqdm(total=n1 - 1, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    with bar:
        z, r_prev, kept = _March(coef, ell, steps, y).run(1, late, z, y, f, set(wanted), bar=bar)
        if late < n1 - 1:
            ell_bar = ell[-1]
            one = torch.zeros(k, 1, p, p, dtype=y.dtype, device=y.device)
            for j in range(m):
                one[:, 0].add_(coef[:, j], alpha=float(ell_bar[j]))
            v = torch.stack([sum(coef[a, j] @ z[a, j] for j in range(m)) for a in range(k)])  # [K, P], coef in place
            t_star, z_star = t[late], z.clone()

            def forcing(i: int) -> Tensor:
                return torch.exp(-mu * (t[i] - t_star)) @ v

            ones = torch.ones(n1, 1, dtype=y.dtype, device=y.device)
            _, _, late_kept = _March(one, ones, steps, y).run(late + 1, n1 - 1, torch.zeros_like(z[:, :1]), r_prev,
                                                               f, set(wanted), forcing=forcing, bar=bar)
            for i, zeta in late_kept.items():
                kept[i] = torch.exp(-mu * (t[i] - t_star))[:, None, None] * z_star + ell_bar[None, :, None] * zeta
    out = torch.zeros(len(wanted), k, m, p, dtype=y.dtype, device=y.device)
    for j, i in enumerate(wanted):
        if i > 0:
            out[j] = kept[i]
    return f, out
