"""Covariance of the predictor over the ensemble during learning and drift (SPEC §10, §3.1, §5.1, §6).

Per network (SPEC §5.1) f = f_0 + K_d ∗ r with the residual r = Y − f, so the fluctuation δf = f − f̄ (whose
residual is −δf) solves δf(x,t) = f_0(x,t) − ∫_0^t K_d(t,s,x,X) δf_X(s) ds: linear in the Gaussian prior
process f_0 of covariance K_GP(t,s) = C(t,s) K_L(t,s), hence Gaussian. After the freeze (SPEC §6.1) the
readout keeps its prior part a_0(t0) and the hidden weights keep drifting, so the prior part of the output
is f_0^fr(x,t) = a_0(t0).φ(h_0(x,t))/√N with, for s ≤ t0 ≤ t, t',

    Cov(f_0^fr(x,t), f_0(x',s))    = C(t0,s)  K_L(t,s,x,x'),
    Cov(f_0^fr(x,t), f_0^fr(x',t')) = C(t0,t0) K_L(t,t',x,x'),

and δf(x,t) = f_0^fr(x,t) − ∫_0^{t0} K_fr(t,s,x,X) δf_X(s) ds with the frozen-readout kernel of §6.2.

Each target (point p at recorded time t_a, or at t0 + τ) reads δf_p = f0_p + ∫ ψ(s) f0_X(s) ds, with ψ
a row [P] of the resolvent of the Volterra operator; its covariance contracts ψ with K_GP over all pairs
of times. Two routes, both on the NDK's expansion of the mean solution and with no (n_grid·P)² array.

Notation. μ_k = (α_k + 1)γ are the rates of the expansions (expansion.py), ascending. For a step of length
h, volterra.exponential_weights gives e_k(h) = e^(−μ_k h) and w0_k(h), w1_k(h) with ∫_{t−h}^t e^(−μ_k(t−s))
g(s) ds = w0_k g(t−h) + w1_k g(t) for linear g. At grid time t_j, for t ≥ t_j,

    K_d(t, t_j) = Σ_k e^(−μ_k(t − t_j)) B_k(j),    K_GP(t, t_j) = Σ_k e^(−μ_k(t − t_j)) A_k(j),

with B_k(j), A_k(j) [P+Q, P] the expansions' coefficients of H and A (expansion.py) at u_j = e^(−2γt_j)
(superscripts XX: among training points, pX: from point p). A target a is a point p_a at an anchor (grid
index a) with per-rate scales s_k: 1 while learning, e^(−α_k γ τ) after the freeze (§6.2); the scaled
kernel is also the cross-covariance of f_0^fr above.

σ0 ≠ σ (_sweep): a backward sweep on the mean's grid t_0 = 0 < ... < t_N, h_j = t_j − t_{j−1}, with the
discretisation of mean.solve (volterra.solve_separable) applied to δf:

    (C1) δf_X(i) + Σ_{j≤i} 𝒦_ij δf_X(j) = f0_X(i),   𝒦_ii = Σ_k w1_k(h_i) B_k^XX(i),
         𝒦_ij = Σ_k e^(−μ_k(t_i − t_{j+1})) ω_k(j) B_k^XX(j) (j < i),   ω_k(j) = w1_k(h_j) e_k(h_{j+1}) + w0_k(h_{j+1});
    (C2) δf_a = f0_a − Σ_{j≤a} g_a(j) δf_X(j) = f0_a + Σ_j ψ_a(j) f0_X(j),   ψ_a (I + 𝒦) = −g_a,
         g_a(j) = Σ_k [w1_k(h_j) E_k(j) + w0_k(h_{j+1}) E_k(j+1)] B_k^{p_a X}(j);
    (C3) E_k(a) = s_k,  E_k(j) = e_k(h_{j+1}) E_k(j+1) for j < a  (= s_k e^(−μ_k(t_a − t_j));  E_k(a+1) = 0);
    (C4) Ψ_k(j) = Σ_{i≥j} ψ(i) e^(−μ_k(t_i − t_j)) = e_k(h_{j+1}) Ψ_k(j+1) + ψ(j),  the history as running sums;
    (C5) ψ(j) = −[g(j) + Σ_k ω_k(j) Ψ_k(j+1) B_k^XX(j)] (I + Σ_k w1_k(h_j) B_k^XX(j))⁻¹,  j = a, a−1, ..., 0.

The same running sums contract ψ with K_GP over all pairs of grid times. For two targets a, b of one anchor,

    (C6) Cov_ab = K_GP(a, b) + acc_ab + acc_ba,
         acc_ab = Σ_l Σ_k (Ψ_k^a(l) − ψ_a(l)/2) A_k^XX(l) ψ_b(l)ᵀ + Σ_l K_GP(a; t_l, X) ψ_b(l)ᵀ

(the first sum: the pairs of grid times i ≥ l, the diagonal counted half each way), accumulated over l by

    (C7) acc_ab += [Σ_k e_k(h_{l+1}) Ψ_k^a(l+1) A_k^XX(l) + ψ_a(l) Σ_k A_k^XX(l)/2
                    + Σ_k E_k^a(l) A_k^{p_a X}(l)] ψ_b(l)ᵀ.

    (C8) A rate with e_k(h_{j+1}) < _FAST forgets over that step: Ψ_k(j) = ψ(j) to rounding in (C4), so
         such rates share one running sum, the last row.

After the freeze the targets differ only by their scales, so both routes carry a basis of them instead of
every drift time:

    (C9)  e^(−α_k γ τ_n) ≈ Σ_i U_ni W_ik  (SVD, singular values below tol/10 of the largest dropped),
          the drift targets being the points with scales W_i at the anchor t0;
    (C10) Cov(t0 + τ_n) = C(t0,t0) K_L(t0+τ_n, t0+τ_n) + D_n + D_nᵀ,   D_n = Σ_ij U_ni acc_ij U_nj.

σ0 = σ (_lag_sweep). The prior is stationary and fluctuation–dissipation (SPEC §5.3) holds exactly: B_k is
constant (one u-node) and A_k = (T/μ_k) B_k, so K_GP(v) = Σ_k (T/μ_k) B_k e^(−μ_k|v|). In the lag v = t_a − s
the row is then the same function ψ(v) for every anchor — a forward Volterra equation solved once per point —
and the covariance at t_a is an integral over [0, t_a]², accumulated as the upper limit V grows:

    (L1) ψ(v) = −Σ_k s_k e^(−μ_k v) B_k^{pX} − Σ_k M_k(v) B_k^XX,   M_k(v) = ∫_0^v e^(−μ_k(v−w)) ψ(w) dw;

on the lag grid v_0 = 0 < v_1 < ... (discretisation.lag_grid), h_j = v_j − v_{j−1}, ψ linear between points,

    (L2) M_k(v_j) = e_k(h_j) M_k(v_{j−1}) + w0_k(h_j) ψ(v_{j−1}) + w1_k(h_j) ψ(v_j),
    (L3) ψ(v_j) (I + Σ_k w1_k B_k^XX) = −Σ_k s_k e^(−μ_k v_j) B_k^{pX} − Σ_k e_k M_k(v_{j−1}) B_k^XX
                                         − ψ(v_{j−1}) Σ_k w0_k B_k^XX;

and at V = t_a, with ψ_a the row of target a,

    (L4) Cov_ab = K_GP_ab(t_a, t_a) + acc_ab + m_ab + acc_ba + m_ba,
         acc_ab(V) = ∫_0^V ψ_a(v) Σ_k (T/μ_k) (M_k^b(v) B_k^XX)ᵀ dv,
         m_ab(V) = Σ_k (T/μ_k) s_k^b mom_k^a(V) (B_k^{p_b X})ᵀ,   mom_k(V) = ∫_0^V e^(−μ_k v) ψ(v) dv,

each exact for linear ψ: with P_k[c,d](h) (volterra.exponential_pair_weights) for the step's ends c, d ∈
{0: v_{j−1}, 1: v_j},

    (L5) acc_ab += Σ_k (T/μ_k) {[w1_k ψ_a(v_{j−1}) + w0_k ψ_a(v_j)] (M_k^b(v_{j−1}) B_k^XX)ᵀ
                                + Σ_cd P_k[c,d] ψ_a(v_c) (ψ_b(v_d) B_k^XX)ᵀ},
    (L6) mom_k += e^(−μ_k v_{j−1}) [w1_k ψ(v_{j−1}) + w0_k ψ(v_j)].

    (L7) A rate with e_k < _FAST over this step and the last enters only through ψ at the step's ends: its
         memory M_k(v_{j−1}) is not carried.

The rough paths of f0 thus cost no accuracy and the lag grid can grow faster than the mean's: only the
fast start limits it. Cost per grid step O(R k_slow P²) for R rows (σ0 = σ: points × (1 + drift basis)
over the whole lag grid; σ0 ≠ σ: points × recorded times whose anchor is still ahead, plus points × drift
basis) and k_slow rates that outlive the step, plus, with σ0 ≠ σ, forming the time-dependent
coefficients, O(K L P (P+Q)) for L ≤ M kept u-vectors.
Shapes: n, m recorded times, P training and Q test points.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import Activation
from ..prior import Prior
from ..times import check_times
from ..validation import check_finite, check_freeze, check_inputs, check_tol
from .discretisation import Discretisation, discretise, lag_grid
from .expansion import Expansion, expand
from .kernels import KernelModel
from .volterra import exponential_pair_weights, exponential_weights

__all__ = ["PhaseCovariance", "predictor_covariance"]


@dataclass
class PhaseCovariance:
    """SPEC §10 covariance over the ensemble at the recorded times of one phase (drift: times since t0).

    Attributes
    ----------
    t : Tensor
        [n] recorded times.
    var_train : Tensor
        [n, P] variance of each training point's predictor (NaN for points not asked for).
    cov_test : Tensor
        [n, Q, Q] covariance between the test points' predictors (NaN rows/columns likewise).
    """
    t: Tensor
    var_train: Tensor
    cov_test: Tensor


@dataclass
class _Group:
    """Targets swept together: nb blocks of n_row = copies × len(pts) rows; row c·len(pts) + i of block b
    reads point pts[i] (index into training + test points) at grid index anchors[b], with per-rate scales
    s = scales[b, row] [K] (1 while learning; copies are the drift basis). Rows of one block are contracted
    with each other: acc [nb, n_row, n_row] accumulates acc of (C6)."""
    anchors: Tensor
    pts: Tensor
    scales: Tensor
    psi_sum: Optional[Tensor] = None  # Ψ_k(j+1) of (C4) [K, nb·n_row, P], rate-major: a step is one batched product
    last: Optional[Tensor] = None  # ψ(j+1) [nb·n_row, P]: Ψ_k(j+1) of the rates that forgot over step j+2 (C8)
    e: Optional[Tensor] = None  # E_k(j+1) of (C3) [nb, n_row, K]
    acc: Optional[Tensor] = None
    _back: Optional[Tensor] = None  # undoes the sort by anchor

    def start(self, kk: int, p: int) -> None:
        order = torch.argsort(self.anchors)  # the active blocks (anchor ≥ j) are then a suffix
        self.anchors, self.scales = self.anchors[order], self.scales[order]
        self._back = torch.argsort(order)
        nb, n_row = self.scales.shape[:2]
        like = self.scales
        self.psi_sum = like.new_zeros(kk, nb * n_row, p)
        self.last = like.new_zeros(nb * n_row, p)
        self.e = like.new_zeros(nb, n_row, kk)
        self.acc = like.new_zeros(nb, n_row, n_row)

    def result(self) -> Tensor:
        return self.acc[self._back]


# a rate whose decay over a step is below this forgets within it: (C8) in _sweep, (L7) in _lag_sweep
_FAST = 1e-15


def _u_basis(ell: Tensor, coef: Tensor, p: int, rel: float) -> tuple[Tensor, Tensor]:
    """ℓ(u_j) [n, M] · coef [K, M, rows, P] ≈ weights [n, L] · basis [L, K·rows·P], the u-dependence cut to
    the left singular vectors above ``rel`` times the largest, those of the training points' block (so
    that the numbers do not depend on which test points are asked for)."""
    flat = coef.permute(1, 0, 2, 3)
    left, sv, _ = torch.linalg.svd(flat[:, :, :p].reshape(flat.shape[0], -1), full_matrices=False)
    left = left[:, sv > sv[0] * rel]
    return ell @ left, left.T @ flat.reshape(flat.shape[0], -1)


def _sweep(disc: Discretisation, kgp: Expansion, gamma: float, p: int, groups: list[_Group], rel: float,
           progress: bool) -> None:
    """Backward sweep (C1)–(C8) of the module docstring over the grid, all groups at once (results in each
    group's acc). kgp: the expansion of A = K_GP/ρ over the same points as disc.ndk.

    Rates are ascending, and those that forget within the next step (the fast end of the ladder in the
    diffusive phase) share one running sum, ψ(j+1), and only the others' sums are kept. A step costs
    O(R (k_slow + 1) P²) for R active rows; the step's matrices are rebuilt only where the step sizes or
    the coefficients change. Streaming the coefficients at each t_j costs as much as the products: their
    u-dependence (the expansion's basis, which ``discretise`` has cut at tol/1000 with each node weighted by its
    kernels' size) is cut to the singular vectors above ``rel`` relative."""
    t, ndk = disc.t, disc.ndk
    n1, dev, dt = t.shape[0], t.device, t.dtype
    mu = (ndk.alpha + 1) * gamma
    kk = mu.shape[0]
    ell = ndk.basis_u(torch.exp(-2 * gamma * t))  # ℓ_m(u_j) [n1, M]
    h = torch.diff(t)
    steps = exponential_weights(mu[None, :], h[:, None])  # 3 × [n1 − 1, K]
    # indexed by grid point j: e_k(h_{j+1}), w0_k(h_{j+1}) (zero past the end) and w1_k(h_j) (zero at j = 0)
    zero = torch.zeros(1, kk, dtype=dt, device=dev)
    decay, w0 = (torch.cat([w, zero]) for w in steps[:2])
    w1 = torch.cat([zero, steps[2]])
    # rates remembering over step j+1 (kept from Ψ(j+1) to Ψ(j)); n_slow[j] = n_kept[j+1] are read at j
    n_kept = (decay >= _FAST).sum(1).tolist()
    n_slow = n_kept[1:] + [0]
    # what the matrices of grid point j depend on: h_j, h_{j+1}, h_{j+2} and ℓ(u_j), constant once
    # u = e^(−2γt) is below rounding
    nan = [float("nan")]
    h_pad = nan + h.tolist() + nan + nan
    ell_list = ell.tolist()

    # [L, K·(P+Q)·P] with [n1, L] weights: the rows at t_j are one product streaming the coefficients once
    parts = [_u_basis(e.basis_u(torch.exp(-2 * gamma * t)), e.coef, p, rel) for e in (ndk, kgp)]
    shape = ndk.coef.shape[:1] + ndk.coef.shape[2:]

    def coefs(j: int) -> tuple[Tensor, Tensor]:
        """B_k(j) and A_k(j): [K, P+Q, P] each."""
        return tuple((weight[j] @ flat).view(shape) for weight, flat in parts)

    for grp in groups:
        grp.start(kk, p)
    eye = torch.eye(p, dtype=dt, device=dev)
    built = None
    for j in tqdm(range(n1 - 1, -1, -1), desc="theory: covariance", disable=not progress, leave=False,
                  mininterval=1.0):
        firsts = [int(torch.searchsorted(grp.anchors, torch.tensor(j, device=dev))) for grp in groups]
        if all(f == grp.anchors.shape[0] for f, grp in zip(firsts, groups)):
            continue
        geom = (n_slow[j], h_pad[j:j + 3], ell_list[j])
        if not (built is not None and geom[0] == built[0]
                and all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(geom[1], built[1]))
                and all(abs(a - b) <= 1e-15 for a, b in zip(geom[2], built[2]))):
            built = geom
            b_c, a_c = coefs(j)
            b_xx, a_xx = b_c[:, :p], a_c[:, :p]
            ks = n_slow[j]
            omega, e_half = w1[j] * decay[j] + w0[j], decay[j]  # ω_k(j) (C1); e_k(h_{j+1}) of (C7)
            # the fast rates' Ψ_k(j+1) = ψ(j+1) (C8) against their weights in (C5) and (C7), side by side
            fast_ba = torch.cat([torch.einsum("k,kpq->pq", omega[ks:], b_xx[ks:]),
                                 torch.einsum("k,kpq->pq", decay[j][ks:], a_xx[ks:])], 1)
            inv = torch.linalg.inv(eye + torch.einsum("k,kpq->pq", w1[j], b_xx))  # (I + 𝒦_jj)⁻¹ (C5)
            a_half = a_xx.sum(0) / 2  # (C7)
            rows_ba = [(b_c[:, grp.pts], a_c[:, grp.pts]) for grp in groups]  # the targets' own rows [K, n_row, P]
        for grp, first, (b_t, a_t) in zip(groups, firsts, rows_ba):
            if first == grp.anchors.shape[0]:
                continue
            e_prev = grp.e[first:]
            n_row, n_pt = grp.scales.shape[1], grp.pts.shape[0]
            ps = grp.psi_sum[:, first * n_row:]  # Ψ_k(j+1) [K, active rows, P]
            e_now = torch.where((grp.anchors[first:] == j)[:, None, None], grp.scales[first:],
                                e_prev * decay[j])  # (C3)
            ps_b = torch.bmm(ps[:ks], b_xx[:ks])  # Ψ_k B_k^XX, one product per slow rate (C5)
            ps_a = torch.bmm(ps[:ks], a_xx[:ks])  # Ψ_k A_k^XX (C7)
            n_act = ps.shape[1] * p
            hist = (omega[:ks] @ ps_b.view(ks, n_act)).view(-1, p)  # Σ_k ω_k Ψ_k B_k (C5)
            half = (e_half[:ks] @ ps_a.view(ks, n_act)).view(-1, p)  # Σ_k e_k Ψ_k A_k (C7)
            last = grp.last[first * n_row:]
            if ks < kk:
                fast = last @ fast_ba  # (C8)
                hist, half = hist + fast[:, :p], half + fast[:, p:]
            g_row = torch.einsum("brk,krq->brq", (w1[j] * e_now + w0[j] * e_prev).view(-1, n_pt, kk), b_t)  # (C2)
            rhs = hist.view(-1, n_row, p) + g_row.reshape(-1, n_row, p)
            psi = -(rhs @ inv)  # (C5)
            # Ψ_k(j) = e_k Ψ_k(j+1) + ψ(j) for the rates that remember over step j+1 (C4)
            kept = n_kept[j]
            ps[ks:kept] = last
            ps[:kept].mul_(decay[j][:kept, None, None]).add_(psi.view(1, -1, p))
            last.copy_(psi.view(-1, p))
            grp.e[first:] = e_now
            cross = torch.einsum("brk,krq->brq", e_now.view(-1, n_pt, kk), a_t).reshape(-1, n_row, p)  # (C7)
            grp.acc[first:] += (half.view(-1, n_row, p) + psi @ a_half + cross) @ psi.transpose(1, 2)  # (C7)


def _drift_basis(lam: Tensor, rel: float) -> tuple[Tensor, Tensor]:
    """(C9): λ [m, K] = e^(−αγτ) ≈ U [m, k] W [k, K], singular values below ``rel`` · the largest dropped:
    after the freeze every target is a combination of k rows of the sweep (the rows are linear in the
    scales, the covariance bilinear), k ≤ min(m, K)."""
    left, sv, vh = torch.linalg.svd(lam, full_matrices=False)
    k = int((sv > sv[0] * rel).sum())
    return left[:, :k], sv[:k, None] * vh[:k]


def _lag_sweep(b_xx: Tensor, b_t: Tensor, mu: Tensor, T: float, lags: Tensor, scales: Tensor,
               reads: list[tuple[slice, list[int]]], progress: bool) -> list[Tensor]:
    """σ0 = σ: the rows (L1)–(L7) of the module docstring, all forward from v = 0 on the lag grid lags [n1].

    b_xx [K, P, P], b_t [K, n_row, P]: the NDK's coefficients B_k, constant, among training points and from
    the n_row target points; mu [K] ascending; T the temperature (A_k = (T/μ_k) B_k). scales [B, K]: rows
    are (block b, point i) at b·n_row + i, with the scales s of (L1). reads: (rows, lag indices) at which
    acc + m of (L4) is wanted over those rows. Returns, per read, [len(indices), len(rows), len(rows)].
    (L7) drops the memory of a fast rate across a grid point, a share 1/(2μh) < 2 % of its own within-step
    part: it changes the covariance by 4e-13 on the benchmark problem of benchmarks/bench_covariance.py,
    2e-11 on the tests'. Cost per step O(R k_slow P² + R² P) for R = B·n_row rows."""
    kk, p = b_xx.shape[:2]
    n_b, n_row = scales.shape[0], b_t.shape[1]
    rows, dev = n_b * n_row, lags.device
    fd = T / mu  # fluctuation–dissipation: A_k = (T/μ_k) B_k
    h = torch.diff(lags)
    decay, w0, w1 = exponential_weights(mu[None, :], h[:, None])  # [n1 − 1, K] each
    pair = exponential_pair_weights(mu[None, :], h[:, None])  # P_k[c, d] [n1 − 1, K, 2, 2]
    # memories read at step j: rates that remember over it or over the one before (L7)
    slow = (decay >= _FAST).sum(1)
    track = torch.maximum(slow, torch.cat([slow[:1], slow[:-1]])).tolist()
    h_list = [float("nan")] + h.tolist()
    n_mom = (mu[None, :] * lags[:-1, None] < 740).sum(1).tolist()
    a_t = fd[:, None, None] * b_t
    mem = b_xx.new_zeros(kk, rows, p)  # M_k(v) (L1)
    mom = b_xx.new_zeros(kk, rows, p)  # mom_k(V) (L4)
    acc = b_xx.new_zeros(rows, rows)  # acc(V) (L4)
    eye = torch.eye(p, dtype=b_xx.dtype, device=dev)

    def forcing(j: int) -> Tensor:
        """−Σ_k s_k e^(−μ_k v_j) B_k^{pX} (L3)."""
        return -torch.einsum("bk,kiq->biq", scales * torch.exp(-mu * lags[j]), b_t).reshape(rows, p)

    out = [[None] * len(idx) for _, idx in reads]

    def read(j: int) -> None:
        for (sl, idx), res in zip(reads, out):
            for m, i in enumerate(idx):
                if i == j:
                    q = torch.einsum("kiq,kjq->kij", mom[:, sl], a_t)
                    m_ab = torch.einsum("kij,bk->ibj", q, scales[sl.start // n_row:sl.stop // n_row])  # (L4)
                    res[m] = acc[sl, sl] + m_ab.reshape(q.shape[1], -1)

    psi = forcing(0)
    read(0)
    built = None
    for j in tqdm(range(1, lags.shape[0]), desc="theory: covariance", disable=not progress, leave=False,
                  mininterval=1.0):
        st = j - 1
        kt = track[st]
        if built != (h_list[j], kt):
            built = (h_list[j], kt)
            inv = torch.linalg.inv(eye + torch.einsum("k,kpq->pq", w1[st], b_xx))  # (L3)
            pair_b = torch.einsum("kab,kpq->abpq", fd[:, None, None] * pair[st], b_xx)  # Σ_k (T/μ_k) P_k B_k (L5)
            # products with ψ at the step's left end: its history weight (L3), then K_GP within the step (L5)
            left = torch.cat([torch.einsum("k,kpq->pq", w0[st], b_xx), pair_b[0, 0], pair_b[1, 0]], 1)
            right = torch.cat([pair_b[0, 1], pair_b[1, 1]], 1)
        mb = torch.bmm(mem[:kt], b_xx[:kt]).view(kt, -1)  # M_k(v_{j−1}) B_k
        mbw = torch.stack([decay[st, :kt], fd[:kt] * w1[st, :kt], fd[:kt] * w0[st, :kt]]) @ mb
        hist, to_left, to_right = mbw.view(3, rows, p)
        at_left = psi @ left
        psi_new = (forcing(j) - hist - at_left[:, :p]) @ inv  # (L3)
        at_right = psi_new @ right
        # (L5): ψ's left end weighs e^(−μx) by w1, its right end by w0
        acc += psi @ (to_left + at_left[:, p:2 * p] + at_right[:, :p]).T
        acc += psi_new @ (to_right + at_left[:, 2 * p:] + at_right[:, p:]).T
        ends = torch.stack([psi, psi_new]).view(2, -1)
        mem.view(kk, -1).mul_(decay[st, :, None]).add_(torch.stack([w0[st], w1[st]], 1) @ ends)  # (L2)
        ne = n_mom[st]  # the rates whose e^(−μ_k v) has not underflowed yet
        mom[:ne] += (torch.exp(-mu[:ne] * lags[st])[:, None] * torch.stack([w1[st, :ne], w0[st, :ne]], 1)
                     @ ends).view(ne, rows, p)  # (L6)
        psi = psi_new
        read(j)
    return [torch.stack(res) for res in out]


def predictor_covariance(x_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation],
                         prior: Prior, t_learn: Tensor, t0: Optional[float] = None,
                         t_drift: Optional[Tensor] = None, tol: float = 1e-4,
                         points: Optional[Sequence[int]] = None, test_points: Optional[Sequence[int]] = None,
                         discretisation: Optional[Discretisation] = None,
                         progress: bool = False) -> dict[str, PhaseCovariance]:
    """SPEC §10: covariance of the predictor over the ensemble, while learning and, with t0, after the freeze
    (module docstring, (C1)–(C10) for σ0 ≠ σ, (L1)–(L7) for σ0 = σ).

    Parameters
    ----------
    x_train, x_test, depth, activation, prior, t_learn, t0, t_drift
        As for ``mean.solve`` (the inputs [P, N0] and [Q, N0] set the device of the computation).
    tol : float
        Target accuracy in (0, 1): of the discretisation built here (the grid of ``mean.solve`` for the same
        tol) and the truncation of the drift basis (tol/10) and of the coefficients' u-dependence (tol/100).
    points, test_points : sequence of int, optional
        Indices of the training / test points to include (None: all); the cost grows linearly with their
        number.
    discretisation : Discretisation, optional
        What ``discretisation.discretise`` returned for the same inputs, times and prior (its tol may
        differ), e.g. the one the mean solution used; with ``covariance=True`` it holds K_GP's expansion
        too, else that is fitted here when σ0 ≠ σ. None: built here over the chosen points only.
    progress : bool
        Show a progress bar over the grid.

    Returns
    -------
    dict of str to PhaseCovariance
        "learn" [n times] and, with t0, "drift" [m times].

    Raises
    ------
    ValueError
        For bad inputs (naming the argument and what is allowed), or a discretisation built from other
        arguments.
    """
    x_train = check_inputs("x_train", x_train)
    x_test = check_inputs("x_test", x_test, dim=x_train.shape[1])
    t_learn = check_times("t_learn", t_learn)
    check_tol(tol)
    check_freeze(t0, t_drift, float(t_learn[-1]))
    dev = x_train.device
    x_train, x_test = (a.to(device=dev, dtype=torch.float64) for a in (x_train, x_test))
    p, q = x_train.shape[0], x_test.shape[0]
    model = KernelModel(activation, depth, prior)
    tr = torch.arange(p) if points is None else torch.as_tensor(list(points), dtype=torch.long)
    te = torch.arange(q) if test_points is None else torch.as_tensor(list(test_points), dtype=torch.long)
    tr, te = tr.to(dev), te.to(dev)
    # only the training points and the chosen test points enter the sweep
    rows = torch.cat([torch.arange(p, device=dev), p + te])
    x_rows = torch.cat([x_train, x_test[te]])
    stationary = prior.sigma0 == prior.sigma
    if discretisation is None:
        disc = discretise(x_train, x_test[te], depth=depth, activation=activation, prior=prior, t_learn=t_learn,
                          t0=t0, t_drift=t_drift, tol=tol, covariance=True)
    else:  # its expansions cover every test point: keep the rows that enter the sweep
        discretisation.check_reuse(x_train, x_test, model, t_learn, t0,
                                   None if t0 is None else check_times("t_drift", t_drift))

        def keep(e: Optional[Expansion]) -> Optional[Expansion]:
            return None if e is None else replace(e, coef=e.coef[:, :, rows])
        disc = replace(discretisation, x_test=x_test[te], ndk=keep(discretisation.ndk), kgp=keep(discretisation.kgp))
    gamma = prior.gamma
    pts = torch.cat([tr, p + torch.arange(te.shape[0], device=dev)])
    xp = x_rows[pts]
    kk, n_row = disc.ndk.alpha.shape[0], pts.shape[0]
    n = t_learn.shape[0]
    t_learn = t_learn.to(dev)
    if t0 is not None:
        tau = check_times("t_drift", t_drift).to(dev)
        drift_u, drift_w = _drift_basis(torch.exp(-gamma * tau[:, None] * disc.ndk.alpha[None, :]), tol / 10)  # (C9)
        nk = drift_u.shape[1]
    if stationary:
        include = torch.cat([t_learn, torch.tensor([float(t0 or 0.0)], dtype=torch.float64, device=dev)])
        lags = lag_grid(disc, gamma, include)
        b_c = disc.ndk.coef[:, 0]  # σ0 = σ: one u-node, the kernel depends on t − s alone
        scales = torch.ones(1, kk, dtype=torch.float64, device=dev)
        reads = [(slice(0, n_row), torch.searchsorted(lags, t_learn).tolist())]
        if t0 is not None:
            scales = torch.cat([scales, drift_w])
            reads.append((slice(n_row, (1 + nk) * n_row), [int(torch.searchsorted(lags, include[-1:]))]))
        accs = _lag_sweep(b_c[:, :p], b_c[:, pts], (disc.ndk.alpha + 1) * gamma, prior.T, lags, scales, reads,
                          progress)
    else:
        # K_GP's expansion, if the discretisation passed in does not hold it (discretise(covariance=False))
        kgp = disc.kgp or expand(model, x_rows, x_train, t_span=disc.t_span, tau_min=disc.tau_min,
                                 u_nodes=disc.ndk.u_nodes.numel(), parts=("kgp",))[0]
        groups = [_Group(anchors=disc.rec, pts=pts,
                         scales=torch.ones(n, n_row, kk, dtype=torch.float64, device=dev))]
        if t0 is not None:
            groups.append(_Group(anchors=torch.tensor([disc.i0], device=dev), pts=pts,
                                 scales=drift_w.repeat_interleave(n_row, 0)[None]))
        _sweep(disc, kgp, gamma, p, groups, tol / 100, progress)
        accs = [grp.result() for grp in groups]
    acc = accs[0]
    # prior covariance of the targets themselves: K_GP(t,t) while learning (C6), (L4)
    covs = [model.prior_cov(t_learn, t_learn, xp, xp) + acc + acc.transpose(1, 2)]
    if t0 is not None:
        d_n = torch.einsum("ti,ipjq,tj->tpq", drift_u, accs[1][0].view(nk, n_row, nk, n_row), drift_u)  # (C10)
        # after the freeze C(t0,t0) K_L(t,t): the readout's prior part stays at its value at t0 (C10)
        t_now = t0 + tau
        c00 = prior.var(torch.tensor(float(t0), dtype=torch.float64, device=dev))
        covs.append(c00 * model.two_time(t_now, t_now, xp, xp).k + d_n + d_n.transpose(1, 2))
    # checked before the points left out are filled with NaN
    cov = check_finite("the predictor's covariance over the ensemble (SPEC §10)", torch.cat(covs), model.keys)
    out, start = {}, 0
    for name, times in (("learn", t_learn), ("drift", None if t0 is None else tau)):
        if times is None:
            continue
        block = cov[start:start + times.shape[0]]
        start += times.shape[0]
        var_train = torch.full((times.shape[0], p), float("nan"), dtype=torch.float64, device=dev)
        var_train[:, tr] = torch.diagonal(block[:, :len(tr), :len(tr)], dim1=1, dim2=2)
        cov_test = torch.full((times.shape[0], q, q), float("nan"), dtype=torch.float64, device=dev)
        cov_test[:, te[:, None], te[None, :]] = block[:, len(tr):, len(tr):]
        out[name] = PhaseCovariance(t=times, var_train=var_train, cov_test=cov_test)
    return out
