"""Covariance of the predictor over the ensemble during learning and drift (SPEC §10, §3.1, §5.1, §6).

Per network (SPEC §5.1) f = f_0 + K_d ∗ (Y − f), so the fluctuation δf = f − f̄ solves
δf(x,t) = f_0(x,t) − ∫_0^t K_d(t,s,x,X) δf_X(s) ds: linear in the Gaussian prior process f_0 of covariance
K_GP(t,s) = C(t,s) K_L(t,s), hence Gaussian. After the freeze (SPEC §6.1) the readout keeps its prior part
a_0(t0) and the hidden weights keep drifting, so the prior part of the output is f_0^fr(x,t) =
a_0(t0).φ(h_0(x,t))/√N with, for s ≤ t0 ≤ t, t',

    Cov(f_0^fr(x,t), f_0(x',s))    = C(t0,s)  K_L(t,s,x,x'),
    Cov(f_0^fr(x,t), f_0^fr(x',t')) = C(t0,t0) K_L(t,t',x,x'),

and δf(x,t) = f_0^fr(x,t) − ∫_0^{t0} K_fr(t,s,x,X) δf_X(s) ds with the frozen-readout kernel of §6.2.

Each target (point p at recorded time t_a, or at t0 + τ) reads δf_p = f0_p + ∫ ψ(s) f0_X(s) ds, with ψ
a row of the resolvent of the Volterra operator; its covariance contracts ψ with K_GP over all pairs of
times. Two routes, both on the NDK's expansion of the mean solution and with no (n_grid·P)² array:

σ0 = σ (_lag_sweep). The prior is stationary and fluctuation–dissipation (SPEC §5.3) holds exactly, so
K_d depends on t − s alone and K_GP(v) = Σ_k (T/μ_k) c_k e^(−μ_k|v|) with the NDK's coefficients c_k.
In the lag v = t_a − s the row is then the same function ρ(v) for every t_a — a forward Volterra
equation solved once per point — and the covariance at t_a is an integral over [0, t_a]², accumulated as
the upper limit grows. ρ is linear between grid points and every integral against the exponentials is
exact (volterra.exponential_pair_weights), so the rough paths of f0 cost no accuracy and the lag grid
can grow faster than the mean's (lag_grid): only the fast start limits it.

σ0 ≠ σ (_sweep). Discretisation of the mean (mean.solve): the same grid and exact exponential
product-integration weights, so that the discrete δf_X = (I + 𝒦)⁻¹ f0_X with 𝒦 block-lower-triangular,
and ψ = −g (I + 𝒦)⁻¹ is found by one backward sweep, all targets at once: the running sums
Y_k(j) = Σ_{i≥j} ψ(i) e^(−μ_k(t_i−t_j)) carry the separable history, exactly as z_km does forward in
volterra.solve_separable. K_GP = ρ G(ρ,u) is expanded on the same rates (expansion.expand, part "prior"),
so the same running sums also contract ψ with K_GP(t_l, t_l') over all pairs of grid times:

    Cov = K_GP(target, target) + X + Xᵀ + S + Sᵀ,   X = Σ_l ψ(l) K_GP(t_l, target),
    S = Σ_l Σ_k (Y_k(l) − ψ(l)/2) G_k(l) ψ(l)ᵀ      (pairs l' ≥ l, the diagonal counted half each way).

After the freeze the targets differ only by the scales e^(−α_k γ τ) of the rates, so both routes carry a
basis of those scales (an SVD truncated at tol/10 relative) instead of every drift time. Rates whose
decay over a step underflows need no memory of their own. Cost per grid step O(R k_slow P²) for R rows
(σ0 = σ: points × (1 + drift basis) over the whole lag grid; σ0 ≠ σ: points × recorded times whose
anchor is still ahead, plus points × drift basis) and k_slow rates that outlive the step, plus, with
σ0 ≠ σ, forming the time-dependent coefficients, O(K L P (P+Q)) for L ≤ M kept u-vectors.
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
from ..validation import check_freeze, check_inputs, check_tol
from .discretisation import Discretisation, discretise, lag_grid
from .expansion import Expansion, expand
from .kernels import KernelModel
from .volterra import exponential_pair_weights, exponential_weights

__all__ = ["PhaseCovariance", "predictor_covariance"]


@dataclass
class PhaseCovariance:
    """SPEC §10 covariance over the ensemble at the recorded times of one phase (drift: times since t0).

    var_train [n, P]: variance of each training point's predictor (NaN for points not asked for);
    cov_test [n, Q, Q]: covariance between the test points' predictors (NaN rows/columns likewise).
    """
    t: Tensor
    var_train: Tensor
    cov_test: Tensor


@dataclass
class _Group:
    """Targets swept together: nb blocks of r = copies × len(pts) rows; row c·len(pts) + i of block b reads
    point pts[i] (index into training + test points) at grid index anchors[b], with per-rate scales[b, row]
    [K] of the kernel (1 while learning; copies are the drift basis). Rows of one block are contracted with
    each other: s [nb, r, r] accumulates the module docstring's S + Xᵀ."""
    anchors: Tensor
    pts: Tensor
    scales: Tensor
    y: Optional[Tensor] = None  # Y_k(j+1) [K, nb·r, P], rate-major so that a step is one batched product
    last: Optional[Tensor] = None  # ψ(j+1) [nb·r, P]: Y_k(j+1) of the rates that forgot over step j+1
    e: Optional[Tensor] = None  # scales · e^(−μ_k(t_a − t_{j+1})), [nb, r, K]
    s: Optional[Tensor] = None
    _back: Optional[Tensor] = None  # undoes the sort by anchor

    def start(self, kk: int, p: int) -> None:
        order = torch.argsort(self.anchors)  # the active blocks (anchor ≥ j) are then a suffix
        self.anchors, self.scales = self.anchors[order], self.scales[order]
        self._back = torch.argsort(order)
        nb, r = self.scales.shape[:2]
        like = self.scales
        self.y = like.new_zeros(kk, nb * r, p)
        self.last = like.new_zeros(nb * r, p)
        self.e = like.new_zeros(nb, r, kk)
        self.s = like.new_zeros(nb, r, r)

    def result(self) -> Tensor:
        return self.s[self._back]


# a rate whose decay over a step is below this forgets within it: in _sweep Y_k(j+1) = ψ(j+1) to rounding,
# in _lag_sweep its memory is not carried across the step's start
_FAST = 1e-15


def _u_basis(ell: Tensor, coef: Tensor, p: int, rel: float) -> tuple[Tensor, Tensor]:
    """ℓ(u_j) [n, M] · coef [K, M, rows, P] ≈ weights [n, L] · basis [L, K·rows·P], the u-dependence cut to
    the left singular vectors above ``rel`` times the largest, those of the training points' block (so
    that the numbers do not depend on which test points are asked for)."""
    flat = coef.permute(1, 0, 2, 3)
    u, sv, _ = torch.linalg.svd(flat[:, :, :p].reshape(flat.shape[0], -1), full_matrices=False)
    u = u[:, sv > sv[0] * rel]
    return ell @ u, u.T @ flat.reshape(flat.shape[0], -1)


def _sweep(disc: Discretisation, prior_ex: Expansion, gamma: float, p: int, groups: list[_Group], rel: float,
           progress: bool) -> None:
    """Backward sweep of the module docstring over the grid, all groups at once (results in each group).

    Rates are ascending, and those that forget within the next step (the fast end of the ladder in the
    diffusive phase) share one running sum, ψ(j+1), and only the others' sums are kept. A step costs
    O(R (k_slow + 1) P²) for R active rows; the step's matrices are rebuilt only where the step sizes or
    the coefficients change. Streaming the coefficients at each t_j costs as much as the products: their
    u-dependence is cut to the singular vectors above ``rel`` relative (about 7 of 12 at 1e-6)."""
    t, ex = disc.t, disc.ndk
    n1, dev, dt = t.shape[0], t.device, t.dtype
    mu = (ex.alpha + 1) * gamma
    kk = mu.shape[0]
    ell = ex.basis_u(torch.exp(-2 * gamma * t))  # [n1, M]
    h = torch.diff(t)
    steps = exponential_weights(mu[None, :], h[:, None])  # 3 × [n1 − 1, K]
    # indexed by grid point j: step j+1 (decay, w0; zero past the end) and step j (w1; zero at j = 0)
    zero = torch.zeros(1, kk, dtype=dt, device=dev)
    decay, w0 = (torch.cat([w, zero]) for w in steps[:2])
    w1 = torch.cat([zero, steps[2]])
    # rates remembering over step j (kept from Y(j+1) to Y(j)); n_slow[j] = n_kept[j+1] are read at j
    n_kept = (decay >= _FAST).sum(1).tolist()
    n_slow = n_kept[1:] + [0]
    # what the matrices of grid point j depend on: h_{j−1}, h_j, h_{j+1} and ℓ(u_j), constant once
    # u = e^(−2γt) is below rounding
    nan = [float("nan")]
    h_pad = nan + h.tolist() + nan + nan
    ell_list = ell.tolist()

    # [L, K·(P+Q)·P] with [n1, L] weights: the rows at t_j are one product streaming the coefficients once
    parts = [_u_basis(ell, e.coef, p, rel) for e in (ex, prior_ex)]
    shape = ex.coef.shape[:1] + ex.coef.shape[2:]

    def coefs(j: int) -> tuple[Tensor, Tensor]:
        """K_d and K_GP rows at t_j: [K, P+Q, P] each."""
        return tuple((weight[j] @ flat).view(shape) for weight, flat in parts)

    for g in groups:
        g.start(kk, p)
    eye = torch.eye(p, dtype=dt, device=dev)
    built = None
    for j in tqdm(range(n1 - 1, -1, -1), desc="theory: covariance", disable=not progress, leave=False,
                  mininterval=1.0):
        firsts = [int(torch.searchsorted(g.anchors, torch.tensor(j, device=dev))) for g in groups]
        if all(f == g.anchors.shape[0] for f, g in zip(firsts, groups)):
            continue
        geom = (n_slow[j], h_pad[j:j + 3], ell_list[j])
        if not (built is not None and geom[0] == built[0]
                and all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(geom[1], built[1]))
                and all(abs(a - b) <= 1e-15 for a, b in zip(geom[2], built[2]))):
            built = geom
            c, g_c = coefs(j)
            c_xx, gc_xx = c[:, :p], g_c[:, :p]
            ks = n_slow[j]
            # Y(j+1) against the weights of δf_X(t_j) in the later ψ(i), i > j, and against K_GP(t_i, t_j)
            w_hist, w_half = w1[j] * decay[j] + w0[j], decay[j]
            merged = torch.cat([torch.einsum("k,kpq->pq", w_hist[ks:], c_xx[ks:]),
                                torch.einsum("k,kpq->pq", decay[j][ks:], gc_xx[ks:])], 1)
            inv = torch.linalg.inv(eye + torch.einsum("k,kpq->pq", w1[j], c_xx))  # (I + 𝒦(t_j, t_j))⁻¹
            g_half = gc_xx.sum(0) / 2
            rows_c = [(c[:, g.pts], g_c[:, g.pts]) for g in groups]  # the targets' own rows [K, r, P]
        for g, first, (c_t, gc_t) in zip(groups, firsts, rows_c):
            if first == g.anchors.shape[0]:
                continue
            ea = g.e[first:]
            r, n_pt = g.scales.shape[1], g.pts.shape[0]
            ya = g.y[:, first * r:]  # [K, active rows, P]
            e_new = torch.where((g.anchors[first:] == j)[:, None, None], g.scales[first:], ea * decay[j])
            z = torch.bmm(ya[:ks], c_xx[:ks])  # one product per slow rate and kernel
            z_g = torch.bmm(ya[:ks], gc_xx[:ks])
            n_act = ya.shape[1] * p
            hist = (w_hist[:ks] @ z.view(ks, n_act)).view(-1, p)
            half = (w_half[:ks] @ z_g.view(ks, n_act)).view(-1, p)
            last = g.last[first * r:]
            if ks < kk:
                fast = last @ merged
                hist, half = hist + fast[:, :p], half + fast[:, p:]
            # ... and the weights of δf_X(t_j) in the targets' own histories
            own = torch.einsum("brk,krq->brq", (w1[j] * e_new + w0[j] * ea).view(-1, n_pt, kk), c_t)
            rhs = hist.view(-1, r, p) + own.reshape(-1, r, p)
            psi = -(rhs @ inv)
            # Y_k(j) = decay Y_k(j+1) + ψ(j) for the rates that remember over step j
            kept = n_kept[j]
            ya[ks:kept] = last
            ya[:kept].mul_(decay[j][:kept, None, None]).add_(psi.view(1, -1, p))
            last.copy_(psi.view(-1, p))
            g.e[first:] = e_new
            # S: Σ_k (Y_k(j) − ψ(j)/2) G_k(j) with Y_k(j) = decay Y_k(j+1) + ψ(j); Xᵀ: K_GP(target, t_j) ψ(j)ᵀ
            cross = torch.einsum("brk,krq->brq", e_new.view(-1, n_pt, kk), gc_t).reshape(-1, r, p)
            g.s[first:] += (half.view(-1, r, p) + psi @ g_half + cross) @ psi.transpose(1, 2)


def _drift_basis(lam: Tensor, rel: float) -> tuple[Tensor, Tensor]:
    """λ [m, K] = e^(−αγτ) ≈ U [m, k] W [k, K], singular values below ``rel`` · the largest dropped: after the
    freeze every target is a combination of k rows of the sweep (the rows are linear in the scales, the
    covariance bilinear), k ≤ min(m, K)."""
    u, sv, vh = torch.linalg.svd(lam, full_matrices=False)
    k = int((sv > sv[0] * rel).sum())
    return u[:, :k], sv[:k, None] * vh[:k]


def _lag_sweep(c_xx: Tensor, c_t: Tensor, mu: Tensor, T: float, u: Tensor, scales: Tensor,
               reads: list[tuple[slice, list[int]]], progress: bool) -> list[Tensor]:
    """σ0 = σ: the rows of the module docstring in lag, all forward from u = 0 on the lag grid u [n1].

    c_xx [K, P, P], c_t [K, r, P]: the NDK's coefficients, constant, among training points and from the r
    target points; mu [K] ascending. The target (point i, scales s [K]) at time t reads δf_i(t) = f0_i(t) +
    ∫_0^t ρ(v) f0_X(t − v) dv with ρ(v) = −Σ_k s_k e^(−μ_k v) c_k[i] − ∫_0^v ρ(w) Σ_k c_k e^(−μ_k(v−w)) dw,
    the same row for every t (solved on the lag grid with ρ linear between its points). Its covariance,
    with K_GP(v) = Σ_k (T/μ_k) c_k e^(−μ_k|v|), accumulates with the upper limit U = t:

        acc(U)[i, i'] = ∫_0^U ρ_i(v) · Σ_k (T/μ_k) [M_k,i'(v) c_k + s_i',k e^(−μ_k v) c_k[i']] dv,

    Cov = K_GP(0) + acc + accᵀ, with M_k(v) = ∫_0^v e^(−μ_k(v−w)) ρ(w) dw (the Volterra memory). Every
    integral is exact for linear ρ (volterra.exponential_weights, exponential_pair_weights): the prior's
    rough paths cost no accuracy.
    scales [B, K]: rows are (block b, point i) at b·r + i. reads: (rows, grid indices) at which acc is
    wanted over those rows. Returns, per read, [len(indices), len(rows), len(rows)].
    Rates whose decay underflows over this step and the last enter only through ρ at the step's ends
    (their memory across a grid point, a share 1/(2μh) < 2 % of their own within-step part, is dropped:
    it changes the covariance by 4e-13 on the benchmark problem of benchmarks/bench_covariance.py, 2e-11 on the tests'). Cost per step
    O(R k_slow P² + R² P) for R = B·r rows."""
    kk, p = c_xx.shape[:2]
    n_b, r = scales.shape[0], c_t.shape[1]
    rows, dev = n_b * r, u.device
    g = T / mu
    h = torch.diff(u)
    decay, w0, w1 = exponential_weights(mu[None, :], h[:, None])  # [n1 − 1, K] each
    pair = exponential_pair_weights(mu[None, :], h[:, None])  # [n1 − 1, K, 2, 2]
    # memories read at step j: rates that remember over it or over the one before
    slow = (decay >= _FAST).sum(1)
    track = torch.maximum(slow, torch.cat([slow[:1], slow[:-1]])).tolist()
    h_list = [float("nan")] + h.tolist()
    n_mom = (mu[None, :] * u[:-1, None] < 740).sum(1).tolist()
    gc_t = g[:, None, None] * c_t
    mem = c_xx.new_zeros(kk, rows, p)
    mom = c_xx.new_zeros(kk, rows, p)  # ∫_0^U ρ(v) e^(−μ_k v) dv
    acc = c_xx.new_zeros(rows, rows)
    eye = torch.eye(p, dtype=c_xx.dtype, device=dev)

    def forcing(j: int) -> Tensor:
        return -torch.einsum("bk,kiq->biq", scales * torch.exp(-mu * u[j]), c_t).reshape(rows, p)

    out = [[None] * len(idx) for _, idx in reads]

    def read(j: int) -> None:
        for (sl, idx), res in zip(reads, out):
            for m, i in enumerate(idx):
                if i == j:
                    q = torch.einsum("kiq,kjq->kij", mom[:, sl], gc_t)
                    cross = torch.einsum("kij,bk->ibj", q, scales[sl.start // r:sl.stop // r])
                    res[m] = acc[sl, sl] + cross.reshape(q.shape[1], -1)

    rho = forcing(0)
    read(0)
    built = None
    for j in tqdm(range(1, u.shape[0]), desc="theory: covariance", disable=not progress, leave=False,
                  mininterval=1.0):
        st = j - 1
        kt = track[st]
        if built != (h_list[j], kt):
            built = (h_list[j], kt)
            inv = torch.linalg.inv(eye + torch.einsum("k,kpq->pq", w1[st], c_xx))
            cells = torch.einsum("kab,kpq->abpq", g[:, None, None] * pair[st], c_xx)
            # products with ρ at the step's left end: history weight, then the prior within the step
            left = torch.cat([torch.einsum("k,kpq->pq", w0[st], c_xx), cells[0, 0], cells[1, 0]], 1)
            right = torch.cat([cells[0, 1], cells[1, 1]], 1)
        z = torch.bmm(mem[:kt], c_xx[:kt]).view(kt, -1)  # M_k(u_{j−1}) c_k
        zw = torch.stack([decay[st, :kt], g[:kt] * w1[st, :kt], g[:kt] * w0[st, :kt]]) @ z
        hist, to_left, to_right = zw.view(3, rows, p)
        at_left = rho @ left
        new = (forcing(j) - hist - at_left[:, :p]) @ inv
        at_right = new @ right
        # ∫ over the step of ρ(v)[...]: ρ's left end weighs e^(−μx) by w1, its right end by w0
        acc += rho @ (to_left + at_left[:, p:2 * p] + at_right[:, :p]).T
        acc += new @ (to_right + at_left[:, 2 * p:] + at_right[:, p:]).T
        ends = torch.stack([rho, new]).view(2, -1)
        mem.view(kk, -1).mul_(decay[st, :, None]).add_(torch.stack([w0[st], w1[st]], 1) @ ends)
        ne = n_mom[st]  # the rates whose e^(−μ_k v) has not underflowed yet
        mom[:ne] += (torch.exp(-mu[:ne] * u[st])[:, None] * torch.stack([w1[st, :ne], w0[st, :ne]], 1)
                     @ ends).view(ne, rows, p)
        rho = new
        read(j)
    return [torch.stack(res) for res in out]


def predictor_covariance(x_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation],
                         prior: Prior, t_learn: Tensor, t0: Optional[float] = None,
                         t_drift: Optional[Tensor] = None, tol: float = 1e-4,
                         points: Optional[Sequence[int]] = None, test_points: Optional[Sequence[int]] = None,
                         discretisation: Optional[Discretisation] = None,
                         progress: bool = False) -> dict[str, PhaseCovariance]:
    """SPEC §10: covariance of the predictor over the ensemble, {"learn": ..., "drift": ...} (drift with t0).

    x_train [P, N0], x_test [Q, N0]; t_learn [n], t_drift [m] as for mean.solve (same grid for the same
    tol; tol also sets the truncation of the drift basis). points / test_points: indices of the training /
    test points to include (None: all); the cost grows linearly with their number. discretisation:
    ``TheoryResult.discretisation`` of the mean solution of the same arguments, reused instead of
    recomputed. Float64 on the device of x_train.
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
        disc = discretise(model, x_train, x_rows, t_learn, t0, t_drift, tol, with_prior=not stationary)
    else:  # its expansions cover every test point: keep the rows that enter the sweep
        def keep(e: Optional[Expansion]) -> Optional[Expansion]:
            return None if e is None else replace(e, coef=e.coef[:, :, rows])
        disc = replace(discretisation, ndk=keep(discretisation.ndk), prior=keep(discretisation.prior))
    gamma = prior.gamma
    pts = torch.cat([tr, p + torch.arange(te.shape[0], device=dev)])
    xp = x_rows[pts]
    kk, r = disc.ndk.alpha.shape[0], pts.shape[0]
    n = t_learn.shape[0]
    t_learn = t_learn.to(dev)
    if t0 is not None:
        tau = check_times("t_drift", t_drift).to(dev)
        u, w = _drift_basis(torch.exp(-gamma * tau[:, None] * disc.ndk.alpha[None, :]), tol / 10)
        nk = u.shape[1]
    if stationary:
        include = torch.cat([t_learn, torch.tensor([float(t0 or 0.0)], dtype=torch.float64, device=dev)])
        lags = lag_grid(disc, gamma, include)
        c = disc.ndk.coef[:, 0]  # σ0 = σ: one u-node, the kernel depends on t − s alone
        scales = torch.ones(1, kk, dtype=torch.float64, device=dev)
        reads = [(slice(0, r), torch.searchsorted(lags, t_learn).tolist())]
        if t0 is not None:
            scales = torch.cat([scales, w])
            reads.append((slice(r, (1 + nk) * r), [int(torch.searchsorted(lags, include[-1:]))]))
        accs = _lag_sweep(c[:, :p], c[:, pts], (disc.ndk.alpha + 1) * gamma, prior.T, lags, scales, reads,
                          progress)
    else:
        # the prior's expansion, if the mean solution did not fit it already (mean.solve's for_covariance)
        prior_ex = disc.prior or expand(model, x_rows, x_train, t_span=disc.t_span, tau_min=disc.tau_min,
                                        parts=("prior",))[0]
        groups = [_Group(anchors=disc.rec, pts=pts, scales=torch.ones(n, r, kk, dtype=torch.float64, device=dev))]
        if t0 is not None:
            groups.append(_Group(anchors=torch.tensor([disc.i0], device=dev), pts=pts,
                                 scales=w.repeat_interleave(r, 0)[None]))
        _sweep(disc, prior_ex, gamma, p, groups, tol / 100, progress)
        accs = [g.result() for g in groups]
    acc = accs[0]
    # prior covariance of the targets themselves: K_GP(t,t) while learning
    covs = [model.prior_cov(t_learn, t_learn, xp, xp) + acc + acc.transpose(1, 2)]
    if t0 is not None:
        both = torch.einsum("ti,ipjq,tj->tpq", u, accs[1][0].view(nk, r, nk, r), u)
        # after the freeze C(t0,t0) K_L(t,t): the readout's prior part stays at its value at t0
        t_now = t0 + tau
        c00 = prior.var(torch.tensor(float(t0), dtype=torch.float64, device=dev))
        covs.append(c00 * model.two_time(t_now, t_now, xp, xp).k + both + both.transpose(1, 2))
    cov = torch.cat(covs)
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
