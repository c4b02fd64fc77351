"""Separable expansion of the two-time kernels in sums of exponentials (SPEC §3.2, §6.2, §11).

With ρ = e^(−γ(t−s)) and u = e^(−2γs) (t ≥ s), every weight correlation is a function of (ρ, u):
C(s,s) = σ² + Δu, C(t,t) = σ² + Δuρ², C(t,s) = ρ C(s,s), Δ = σ0² − σ². Hence

    NDK(t,s)                 = ρ H(ρ, u),      H = K_L + ρ C(s,s) K'_L G_L          (part "ndk"),
    frozen kernel (§6.2)     = e^(−γ(t0−s)) H(ρ_ts, u_s),
    prior covariance (§3.1)  = K_GP(t,s) = ρ A(ρ, u),      A = C(s,s) K_L   (part "kgp").

We write H(ρ, u) = H(0, u) + Σ_k B_k(u) ρ^{α_k} (and A likewise, with coefficients A_k(u) on the same
rates) with a fixed ladder of rates α_k (a few integers,
then log-spaced up to the smallest lag that matters) fitted by least squares in ρ, and Lagrange
interpolation in u at Chebyshev nodes (a single node when σ0 = σ: then H does not depend on u). How many
nodes the u-dependence needs is probed on a few pairs (:func:`u_node_count`: 5 to 33 nodes, U_LEVELS), and
the coefficients' u-dependence is then cut to its leading singular vectors (``u_rel``, :func:`_cut_u`), which the
solvers see as the functions ℓ(u) · mix.
H(0, u) is the decorrelated mean kernel m_∞(x) m_s(x') (§6.4), kept exact. The expansion turns the
Volterra history into running sums (``volterra.solve_separable``) and gives the drift phase in closed
form, while the √τ cusp of relu is represented by the fast rates instead of being under-resolved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.interpolate import BarycentricInterpolator
from torch import Tensor
from tqdm.auto import tqdm

from .kernels import KernelModel

__all__ = ["Expansion", "expand", "u_node_count", "block_rows", "fit_lags", "rates", "BLOCK_BYTES",
           "DOUBLES_PER_SAMPLE", "U_LEVELS"]


@dataclass(frozen=True)
class Expansion:
    """H(ρ, u; xa, xb) ≈ Σ_k Σ_j coef[k, j] ρ^{alpha[k]} b_j(u), with alpha[0] = 0 (the mean kernel) and
    b(u) = ℓ(u) · u_mix, ℓ the Lagrange basis at the nodes (b = ℓ without u_mix).

    alpha: [K]; u_nodes: [M]; coef: [K, L, p, q] (L = M without u_mix); fit_error: max |H − fit| on validation
    lags (between the fitting lags) for up to 64 rows of xa spread over it, every column, before the cut in u;
    u_mix: [M, L] the leading left singular vectors of the coefficients' u-dependence, or None.
    """
    alpha: Tensor
    u_nodes: Tensor
    coef: Tensor
    fit_error: float
    u_mix: Optional[Tensor] = None

    def basis_u(self, u: Tensor) -> Tensor:
        """b_j(u) = Σ_m ℓ_m(u) u_mix[m, j], ℓ the Lagrange basis at the Chebyshev nodes (module docstring).

        Parameters
        ----------
        u : Tensor
            [n] values of u = e^(−2γs).

        Returns
        -------
        Tensor
            [n, L], in u's dtype and on its device.
        """
        if self.u_nodes.numel() == 1:
            return torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device)
        interp = BarycentricInterpolator(self.u_nodes.cpu().numpy(), np.eye(self.u_nodes.numel()))
        ell = torch.as_tensor(interp(u.cpu().numpy()), dtype=u.dtype, device=u.device)
        return ell if self.u_mix is None else ell @ self.u_mix.to(ell)


def rates(gamma: float, tau_min: float, per_decade: int = 6) -> Tensor:
    """α ladder: 0 (mean kernel), 1..4, then log-spaced from 5 to 1/(γ τ_min)."""
    top = max(1.0 / (gamma * tau_min), 10.0)
    n_log = max(2, int(math.ceil(per_decade * math.log10(top / 5.0))))
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
    # A before H: H is built in place in K'_L's array (no full-size temporaries; tt is not used after)
    a = c_s * tt.k if "kgp" in parts else None
    h = tt.kp.mul_(rho * c_s).mul_(tt.g).add_(tt.k) if "ndk" in parts else None
    out = [a if part == "kgp" else h for part in parts]
    return out[0] if len(out) == 1 else torch.cat(out, 2)


# numbers of Chebyshev nodes in u when σ0 ≠ σ, of which u_node_count picks one
U_LEVELS = (5, 7, 9, 13, 17, 25, 33)
VALIDATED_ROWS = 64
# the u-probe's pairs and lags (every PROBE_LAG_STEP-th validation lag): the u-dependence is smooth in the lag
PROBE_ROWS, PROBE_COLS, PROBE_LAG_STEP = 16, 256, 4

# doubles alive per (pair, lag) while the kernels are evaluated and fitted (the layer recursion's temporaries:
# the scale issue saw ~4,700 P² doubles for the 361 lags of depth 3 relu, 13 a sample)
DOUBLES_PER_SAMPLE = 16
# blocks of the kernel fit beyond this are no faster, only larger
BLOCK_BYTES = 2**29


# lags the fit samples per rate of the ladder: σ0 = σ, and σ0 ≠ σ, where the fit repeats at every u-node. Half
# as many move the mean predictor of the scale problem (P = 100, relu depth 3) by 4e-8 (σ0 = σ) and 4e-7 (σ0 = σ/2)
# of its scale against 16 a rate; σ0 = σ keeps 8, whose numbers the committed fixture holds
# (tests/fixtures/README.md)
LAGS_PER_RATE, LAGS_PER_RATE_U = 8, 4


def fit_lags(gamma: float, tau_min: float, per_decade: int = 6, stationary: bool = True) -> int:
    """Number of lags the fit samples the kernels at (LAGS_PER_RATE or, σ0 ≠ σ, LAGS_PER_RATE_U per rate, plus
    τ = 0)."""
    return (LAGS_PER_RATE if stationary else LAGS_PER_RATE_U) * rates(gamma, tau_min, per_decade).numel() + 1


def _lags(gamma: float, n_rates: int, t_span: float, tau_min: float, stationary: bool) -> tuple[Tensor, Tensor]:
    """The fit's lags (τ = 0 and fit_lags' number per rate, log-spaced from tau_min/10 to the span) and the
    validation lags between them."""
    lo, hi = math.log10(tau_min / 10), math.log10(max(t_span, 40.0 / gamma))
    n_fit = (LAGS_PER_RATE if stationary else LAGS_PER_RATE_U) * n_rates
    tau_fit = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(lo, hi, n_fit, dtype=torch.float64)])
    tau_val = torch.logspace(lo + 0.5 * (hi - lo) / n_fit, hi, n_fit - 1, dtype=torch.float64)
    return tau_fit, tau_val


def _node_time(u: float, gamma: float) -> float:
    """s of u = e^(−2γs); u = 0 is s = ∞: the stationary limit is taken at a late time instead."""
    return -math.log(u) / (2 * gamma) if u > 0 else 60.0 / gamma


def _spread(n: int, most: int) -> Tensor:
    """Up to ``most`` indices spread evenly over range(n)."""
    return torch.unique(torch.linspace(0, n - 1, min(n, most), dtype=torch.float64).round().long())


def u_node_count(model: KernelModel, xa: Tensor, xb: Tensor, t_span: float, tau_min: float, u_tol: float,
                 per_decade: int = 6, parts: tuple = ("ndk",)) -> int:
    """The fewest Chebyshev nodes in u (U_LEVELS) that interpolate H (and A) to ``u_tol`` of their size at each u
    (the largest over the pairs and lags probed), probed on PROBE_ROWS × PROBE_COLS pairs spread over xa × xb, at
    every PROBE_LAG_STEP-th validation lag and at the U_LEVELS[-1] − 1 points in u halfway (in angle) between the
    last level's nodes. 1 when σ0 = σ; the last level when none is within u_tol.

    xa: [p, N0], xb: [q, N0] as for :func:`expand`. A node probed costs about
    PROBE_ROWS·PROBE_COLS/(p·q·PROBE_LAG_STEP) of a node of the fit.
    """
    prior = model.prior
    if prior.sigma0 == prior.sigma:
        return 1
    gamma = prior.gamma
    _, tau_val = _lags(gamma, rates(gamma, tau_min, per_decade).numel(), t_span, tau_min, stationary=False)
    tau = tau_val[::PROBE_LAG_STEP]
    cpu = torch.device("cpu")
    xa_c = xa.to(cpu, torch.float64)[_spread(xa.shape[0], PROBE_ROWS)]
    xb_c = xb.to(cpu, torch.float64)[_spread(xb.shape[0], PROBE_COLS)]

    samples: dict[float, np.ndarray] = {}  # by u: the levels share nodes (5, 9, 17, 33 and 7, 13, 25 nest)

    def at(u: Tensor) -> np.ndarray:
        for v in u.tolist():
            if round(v, 12) not in samples:
                samples[round(v, 12)] = _h_samples(model, tau, _node_time(v, gamma), xa_c, xb_c, parts).reshape(-1).numpy()
        return np.stack([samples[round(v, 12)] for v in u.tolist()])

    # the points halfway (in angle) between the last level's nodes: no level has a node there
    theta = math.pi * (torch.arange(U_LEVELS[-1] - 1, dtype=torch.float64) + 0.5) / (U_LEVELS[-1] - 1)
    between = 0.5 * (1 - torch.cos(theta))
    truth = at(between)
    # relative to the kernels' size at each u: they can be small at s = 0 (σ0 ≪ σ), where learning is fast
    scale = np.abs(truth).max(1)
    for level in U_LEVELS:
        nodes = _chebyshev_nodes(level)
        miss = (np.abs(BarycentricInterpolator(nodes.numpy(), at(nodes))(between.numpy()) - truth).max(1) / scale).max()
        if miss <= u_tol:
            return level
    return U_LEVELS[-1]


def _cut_u(coef: Tensor, rows: int, rel: float) -> tuple[Tensor, Optional[Tensor]]:
    """coef [K, M, p, c] ≈ mix · coef' [K, L, p, c] in its u-index (mix [M, L]): the left singular vectors of
    the u-dependence of the first ``rows`` rows (the training points: the cut does not depend on the test points)
    above ``rel`` times the largest, each node weighted by 1/(its kernels' size at ρ = 1) (relative to the
    largest node's), so that the cut is
    relative where the kernels are small (s = 0 when σ0 ≪ σ). coef' is written over coef's storage (read rate by
    rate before it is overwritten): no second copy exists. (coef, None) when nothing is cut."""
    k, m = coef.shape[:2]
    size_u = coef[:, :, :rows].sum(0).abs().amax((1, 2)).clamp(min=torch.finfo(coef.dtype).tiny)  # |H(1, u_m)|
    # weights ≥ 1 (the largest node's is 1), so that mix's entries stay within 1 and b(u) = ℓ(u) · mix is of order
    # one as ℓ is (volterra.LATE_ELL compares its values), while coef' carries the kernels' scale
    w = size_u.max() / size_u
    # singular vectors from the M × M Gram matrix, summed over the rates: one pass, no [M, K·p·c] copy (it resolves
    # them down to ~1e-8 of the largest: below that, noise directions are kept, which costs time, not accuracy)
    gram = sum((w[:, None] * c) @ (w[:, None] * c).T for c in (coef[j, :, :rows].reshape(m, -1) for j in range(k)))
    ev, vec = torch.linalg.eigh(gram)  # ascending
    keep = ev.clamp(min=0).sqrt() > rel * ev[-1].clamp(min=0).sqrt()
    keep[-1] = True  # the leading direction, also for coefficients that are all zero
    if bool(keep.all()):
        return coef, None
    left = vec[:, keep].flip(1)
    into, mix = (w[:, None] * left).T.contiguous(), (left / w[:, None]).contiguous()
    n_cut, size = mix.shape[1], coef[0, 0].numel()
    flat, storage = coef.view(k, m, size), coef.view(-1)
    for j in range(k):  # rate j is written over elements of rates ≤ j only
        storage[j * n_cut * size:(j + 1) * n_cut * size].view(n_cut, size).copy_(into @ flat[j])
    return storage[:k * n_cut * size].view(k, n_cut, *coef.shape[2:]), mix


def block_rows(p: int, q: int, lags: int, budget_bytes: float) -> int:
    """Rows of xa per block so that the kernel samples of a block, [lags, rows, q] with their temporaries,
    fit in ``budget_bytes`` (at least one row)."""
    return int(max(1, min(p, budget_bytes // (8 * DOUBLES_PER_SAMPLE * lags * max(q, 1)))))


def expand(model: KernelModel, xa: Tensor, xb: Tensor, t_span: float, tau_min: float,
           per_decade: int = 6, u_nodes: int = U_LEVELS[1], parts: tuple = ("ndk",), u_rel: float = 0.0,
           basis_rows: Optional[int] = None, block_bytes: float = BLOCK_BYTES,
           progress: bool = False) -> tuple[Expansion, ...]:
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
        Chebyshev nodes in u when σ0 ≠ σ (:func:`u_node_count` chooses them; one node when σ0 = σ).
    parts : tuple of str
        Which kernels to expand: "ndk" (H), "kgp" (A).
    u_rel : float
        Cut the coefficients' u-dependence to its left singular vectors above u_rel times the largest (0: no
        cut), one basis for all parts (Expansion.u_mix).
    basis_rows : int, optional
        The leading rows of xa whose coefficients decide the cut (default all: the training points, so that
        the numbers do not depend on the test points).
    block_bytes : float
        Memory for the kernel samples: the fit runs over blocks of rows of xa (:func:`block_rows`), so that
        only the coefficients are P²-sized (the samples at every lag for every pair would be ~4,700 P² doubles).
    progress : bool
        Show a progress bar (with its ETA) over the blocks.

    Returns
    -------
    tuple of Expansion
        One per entry of ``parts``, coef [K, L, p, q]; the fit runs in float64 on the CPU and the
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
    alpha = rates(gamma, tau_min, per_decade)
    stationary = prior.sigma0 == prior.sigma
    nodes = torch.ones(1, dtype=torch.float64) if stationary else _chebyshev_nodes(u_nodes)
    tau_fit, tau_val = _lags(gamma, alpha.numel(), t_span, tau_min, stationary)
    basis = lambda tau: torch.exp(-gamma * tau[:, None] * alpha[None, 1:])  # noqa: E731  [n, K-1]
    b_fit, b_val = basis(tau_fit), basis(tau_val)
    # least squares through the pseudo-inverse (SVD, rank cut as LAPACK's gelsd): shared by the u-nodes
    solver = torch.linalg.pinv(b_fit)
    p, q, n_parts = xa.shape[0], xb.shape[0], len(parts)
    coef = torch.empty(alpha.numel(), nodes.numel(), p, q * n_parts, dtype=torch.float64)
    err = torch.zeros(n_parts, dtype=torch.float64)
    m_inf = model.last_layer_mean(torch.full((1,), prior.sigma ** 2, dtype=torch.float64), xa_c)[0]
    rows = block_rows(p, q * n_parts, tau_fit.numel(), block_bytes)
    # the fit error on VALIDATED_ROWS rows spread over xa (every row when there are fewer): a diagnostic whose
    # kernel samples would otherwise cost as much as the fit's
    checked = _spread(p, VALIDATED_ROWS)
    bar = tqdm(total=nodes.numel() * math.ceil(p / rows), desc="theory: kernel fit", unit="block",
               disable=not progress, leave=False, mininterval=1.0)
    for m, u in enumerate(nodes.tolist()):
        s = 0.0 if stationary else _node_time(u, gamma)
        su = torch.full((1,), s, dtype=torch.float64)
        h0 = m_inf[:, None] * model.last_layer_mean(prior.var(su), xb_c)[0][None, :]
        # H(0, u) = m_∞ m_s and A(0, u) = C(s,s) m_∞ m_s
        h0 = torch.cat([h0 * (prior.var(su) if part == "kgp" else 1.0) for part in parts], 1)
        coef[0, m] = h0
        for start in range(0, p, rows):
            blk = slice(start, min(start + rows, p))
            b = blk.stop - blk.start
            target = _h_samples(model, tau_fit, s, xa_c[blk], xb_c, parts).sub_(h0[blk]).reshape(tau_fit.numel(), -1)
            sol = solver @ target  # [K-1, b*q*n_parts]
            coef[1:, m, blk] = sol.reshape(-1, b, q * n_parts)
            bar.update()
        for start in range(0, checked.numel(), rows):
            at = checked[start:start + rows]
            val = _h_samples(model, tau_val, s, xa_c[at], xb_c, parts).sub_(h0[at]).reshape(tau_val.numel(), len(at),
                                                                                          n_parts, q)
            miss = (b_val @ coef[1:, m, at].reshape(alpha.numel() - 1, -1)).view(-1, len(at), n_parts, q) - val
            err = torch.maximum(err, miss.abs().amax((0, 1, 3)))
    bar.close()
    mix = None
    if u_rel > 0 and nodes.numel() > 1:
        coef, mix = _cut_u(coef, p if basis_rows is None else basis_rows, u_rel)
    coefs = coef.view(alpha.numel(), coef.shape[1], p, n_parts, q).unbind(3)
    return tuple(Expansion(alpha=alpha.to(dev), u_nodes=nodes.to(dev), coef=c.contiguous().to(dev),
                           fit_error=float(e), u_mix=None if mix is None else mix.to(dev))
                 for c, e in zip(coefs, err))
