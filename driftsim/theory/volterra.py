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
# the most steps of one block of repeated steps (``_March._block``; 1: step by step), which balances the block's
# one pass over the slow rates' ks M P² coefficients (ks M/4 P² a step) against its lag products (1.5 M P² a step);
# its lag matrices hold (BLOCK_MAX − 1) M P² numbers
BLOCK_MAX = 4
# the coefficients' rows a step's two products share while they stay in the cache (``_March._sums``)
CACHE_BYTES = 6 * 2**20


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
        # ahead[i]: how many steps from i on repeat the step before i (same[i], same[i + 1], ...)
        same = self.same.tolist()
        self.ahead = [0] * (len(same) + 1)
        for i in range(len(same) - 1, -1, -1):
            self.ahead[i] = self.ahead[i + 1] + 1 if same[i] else 0

    def run(self, first: int, last: int, z: Tensor, r_prev: Tensor, f: Tensor, keep: set, forcing=None,
            bar=None) -> tuple[Tensor, Tensor, dict]:
        """Steps first..last (t_{i−1} → t_i) from the running sums z [K, M, P] and residual r_prev at t_{first−1};
        f[i] filled. Returns z and r at t_last and {i: z_i} for i in ``keep``."""
        k, m, p, ell, y = self.k, self.m, self.y.shape[0], self.ell, self.y
        kept, sums, fast, factors, lags, ks = {}, None, None, None, None, k
        marks = sorted(j for j in keep if first <= j <= last)
        i = first
        while i <= last:
            decay, w0 = self.decays[i - 1], self.w0s[i - 1]
            w_new = self.w1s[i - 1][:, None] * ell[i][None, :]  # [K, M]
            new = not (self.same[i] and sums is not None)
            if not new and ks < k and fast is None:
                fast = self._sums(w0[ks:], ks)
            if not new and BLOCK_MAX > 1 and self.ahead[i] >= 2:
                # a block of repeated steps: one pass over the slow rates' coefficients for all its steps, the
                # steps within the block through the lag matrices (``_block``)
                if lags is None:
                    lags = self._lag_matrices(i, ks)
                end = min(i + BLOCK_MAX - 1, i + self.ahead[i] - 1, last, next((j for j in marks if j >= i), last))
                rebuild = ks < k and (end in keep or end == last or not self.same[end + 1])
                z, r_prev, factors = self._block(i, end, ks, z, r_prev, f, sums, factors, fast, lags, forcing,
                                                 rebuild)
                if end in keep:
                    kept[end] = z.clone()
                if bar is not None:
                    bar.update(end - i + 1)
                i = end + 1
                continue
            if new:
                # a new step length: every rate carried, A_m and the history product from one pass over coef_z
                ks, fast, lags, factors = int((decay > FORGET).sum()), None, None, None  # μ ascending: slow first
                zs = decay[:, None, None] * z + (w0[:, None] * ell[i - 1][None, :])[..., None] * r_prev
                sums, rhs = self._sums(self.w1s[i - 1], 0, zs)
            else:
                zs = decay[:ks, None, None] * z[:ks] + (w0[:ks, None] * ell[i - 1][None, :])[..., None] * r_prev
                rhs = self.coef_z[:, : ks * m * p] @ zs.reshape(-1)
                if ks < k:
                    rhs = rhs + ell[i - 1] @ (fast @ r_prev)
            factors = self._factors(i, sums, factors)
            lu, pivots, s_y = factors
            rhs = rhs + s_y
            if forcing is not None:
                rhs = rhs + forcing(i)
            f[i] = torch.linalg.lu_solve(lu, pivots, rhs[:, None])[:, 0]
            r = y - f[i]
            if new:
                z = zs + w_new[:, :, None] * r
            else:
                z[:ks] = zs + w_new[:ks, :, None] * r
                if ks < k and (i in keep or i == last or not self.same[i + 1]):
                    z[ks:] = self._fast_sums(i, ks, r_prev, r)
            r_prev = r
            if i in keep:
                kept[i] = z.clone()
            if bar is not None:
                bar.update()
            i += 1
        return z, r_prev, kept

    def _factors(self, i: int, sums: Tensor, factors: Optional[tuple]) -> tuple:
        """LU factors of I + S_i, S_i = Σ_m ℓ_m(t_i) A_m, and S_i y: kept while ℓ is constant (``factors``)."""
        if factors is not None and self.constant_ell:
            return factors
        s_i = torch.tensordot(self.ell[i], sums, 1)
        return (*torch.linalg.lu_factor(self.eye + s_i), s_i @ self.y)

    def _fast_sums(self, i: int, ks: int, r_prev: Tensor, r: Tensor) -> Tensor:
        """The running sums at t_i of the rates ks.. that forget a step: w0 ℓ(t_{i−1}) r_{i−1} + w1 ℓ(t_i) r_i."""
        ell = self.ell
        return ((self.w0s[i - 1][ks:, None] * ell[i - 1])[..., None] * r_prev
                + (self.w1s[i - 1][ks:, None] * ell[i])[..., None] * r)

    def _sums(self, w: Tensor, first: int, zs: Optional[Tensor] = None):
        """Σ_k w_k coef[first + k, m] per u-node, [M, P, P] (a view); with zs [K, M, P] also the history product
        Σ_{k,m} coef[k, m] zs[k, m] [P], from the same pass over coef_z: by blocks of rows small enough to stay in
        the cache between the two products (P = 1000, K = 46: 25 ms instead of 33 for the two apart)."""
        p, k, m = self.y.shape[0], self.k, self.m
        rows = self.coef_z.view(p, k, m * p)[:, first:]
        sums = torch.empty(p, m * p, dtype=self.y.dtype, device=self.y.device)
        if zs is None:
            torch.matmul(w, rows, out=sums)
            return sums.view(p, m, p).transpose(0, 1)
        hist, flat = torch.empty_like(self.y), zs.reshape(-1)
        step = p if self.y.is_cuda else max(1, CACHE_BYTES // (8 * k * m * p))
        for q in range(0, p, step):
            torch.matmul(w, rows[q:q + step], out=sums[q:q + step])
            torch.mv(self.coef_z[q:q + step], flat, out=hist[q:q + step])
        return sums.view(p, m, p).transpose(0, 1), hist

    def _lag_matrices(self, i: int, ks: int) -> tuple[Tensor, dict]:
        """G_lm = Σ_{k slow} d_k^(l−1) (d_k w1_k + w0_k) coef[k, m], l = 1..BLOCK_MAX − 1, for step i's length:
        [BLOCK_MAX − 1, M, P, P]; and an empty dict for ``_block``'s weights per block length (small problems
        pay for each small tensor op)."""
        p, m = self.y.shape[0], self.m
        d, w0, w1 = self.decays[i - 1][:ks], self.w0s[i - 1][:ks], self.w1s[i - 1][:ks]
        powers = d[None, :] ** torch.arange(BLOCK_MAX - 1, device=d.device, dtype=d.dtype)[:, None]
        a = powers * (d * w1 + w0)
        return torch.stack([a @ self.coef[:ks, j].reshape(ks, p * p) for j in range(m)], 1).view(-1, m, p, p), {}

    def _block_weights(self, first: int, length: int, ks: int) -> tuple:
        """A block's weights for its length: d^l and w0 d^(l−1) of its start [L, ks, 1, 1], z's weights of the
        r_j [L + 1, ks] and of z(t_b) [ks, 1, 1], and a zeroed start buffer [BLOCK_MAX, ks, M, P]."""
        y = self.y
        d, w0, w1 = self.decays[first - 1][:ks], self.w0s[first - 1][:ks], self.w1s[first - 1][:ks]
        powers = d[None, :] ** torch.arange(length + 1, device=d.device, dtype=d.dtype)[:, None]  # [L + 1, ks]
        # r_b weighs w0 d^(L−1), r_j (b < j < last) d^(last−j−1) (d w1 + w0), r_last w1
        weights = torch.cat([(w0 * powers[length - 1])[None], powers[:length - 1].flip(0) * (d * w1 + w0), w1[None]])
        return (powers[1:, :, None, None], (w0 * powers[:-1])[:, :, None, None], weights,
                powers[length][:, None, None], torch.zeros(BLOCK_MAX, ks, self.m, y.shape[0], dtype=y.dtype,
                                                           device=y.device))

    def _block(self, first: int, last: int, ks: int, z: Tensor, r_b: Tensor, f: Tensor, sums: Tensor,
               factors: Optional[tuple], fast: Optional[Tensor], lags: tuple, forcing,
               rebuild: bool) -> tuple[Tensor, Tensor, tuple]:
        """Steps first..last, all of one length, from z and r_b at t_b (b = first − 1). Unrolled from t_b, the
        history of step b + l is Σ_{k slow, m} coef[k, m] (d_k^l z_km(t_b) + w0_k d_k^(l−1) ℓ_m(t_b) r_b) (one
        product for the block) + Σ_{b<j<b+l} Σ_m ℓ_m(t_j) G_{b+l−j, m} r_j + Σ_m ℓ_m(t_{b+l−1}) B_m r_{b+l−1},
        exactly as step by step; z_km(t_last) = d_k^L z_km(t_b) + Σ_j (weight of r_j)_k ℓ_m(t_j) r_j. Returns z,
        r at t_last and the factors of I + S at t_last."""
        p, m, y, ell = self.y.shape[0], self.m, self.y, self.ell
        length = last - first + 1
        lags, per_length = lags
        if length not in per_length:
            per_length[length] = self._block_weights(first, length, ks)
        of_z, of_r, weights, decay, start = per_length[length]
        # the block's starts padded to BLOCK_MAX rows: a short block costs as much as a full one, and BLAS streams
        # coef_z.T once for 4 rows (2 rows: 1.6 matrix-vector products, 6: 2.4; P = 1000, ks = 21)
        start[:length] = of_z * z[None, :ks] + of_r * ell[first - 1][:, None] * r_b  # [L, ks, M, P]
        rhs = (start.view(BLOCK_MAX, ks * m * p) @ self.coef_z[:, : ks * m * p].T)[:length]  # [L, P]
        rs = [r_b]
        for l in range(length):
            i = first + l
            factors = self._factors(i, sums, factors)
            rhs[l] += factors[2]
            if fast is not None:
                rhs[l] += ell[i - 1] @ (fast @ rs[-1])
            if forcing is not None:
                rhs[l] += forcing(i)
            f[i] = torch.linalg.lu_solve(factors[0], factors[1], rhs[l, :, None])[:, 0]
            rs.append(y - f[i])
            if l + 1 < length:
                rhs[l + 1:] += ell[i] @ (lags[: length - l - 1] @ rs[-1])
        # z at t_last: the weights of the r_j, each × ℓ(t_j)
        spread = (weights[:, :, None] * ell[first - 1:last + 1, None, :]).view(length + 1, ks * m)  # [L + 1, ks M]
        z[:ks] = decay * z[:ks] + (spread.T @ torch.stack(rs)).view(ks, m, p)
        if rebuild:
            z[ks:] = self._fast_sums(last, ks, rs[-2], rs[-1])
        return z, rs[-1], factors


def solve_separable(coef: Tensor, mu: Tensor, ell: Tensor, t: Tensor, y: Tensor, keep: Tensor,
                    progress: bool = False, desc: str = "volterra") -> tuple[Tensor, Tensor]:
    """SPEC §5.1, f(t) = ∫_0^t K(t,s) r(s) ds with the residual r = y − f, for a separable kernel
    K(t,s) = Σ_{k,m} coef[k,m] e^(−μ_k (t−s)) ℓ_m(s), by product integration: r is interpolated linearly
    on each step and the exponentials are integrated exactly, through the running sums
    z_km(t) = ∫_0^t e^(−μ_k(t−s)) ℓ_m(s) r(s) ds; the new point is implicit,
    (I + S_i) f_i = Σ coef (decay z + w0 ℓ r_{i−1}) + S_i y with S_i = Σ w1 ℓ_m(t_i) coef.
    Cost O(n K M P²), memory O(K M P²) (one copy of coef, and (BLOCK_MAX − 1) M lag matrices): no (n² × P²) array.

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
    # returned or the next step differs. The repeated steps go in blocks of BLOCK_MAX: one pass over the slow rates'
    # coefficients serves the block, whose steps see each other through BLOCK_MAX − 1 lag matrices per u-node
    # (benchmarks/README.md "Scale": the history product was memory-bound, one pass over ks M P² a step). A new step
    # length carries every rate and forms its sums and history product in one pass over the coefficients.
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
