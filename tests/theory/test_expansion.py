"""The kernel expansion's u-dependence (theory/expansion.py): the probe that picks the Chebyshev nodes and the
cut of the coefficients to their leading singular vectors in u."""
from __future__ import annotations

import math

import pytest
import torch

from driftsim.prior import Prior
from driftsim.theory.expansion import U_LEVELS, _cut_u, expand, u_node_count
from driftsim.theory.kernels import KernelModel

GEN = torch.Generator().manual_seed(3)


def test_the_cut_in_u_recovers_a_low_rank_u_dependence_in_place():
    """coef [K, M, p, c] = A [M, 3] · base [K, 3, p, c]: the cut keeps 3 directions and mix · coef' is coef,
    written over coef's own storage; a full-rank u-dependence is not cut."""
    k, m, p, c = 4, 9, 5, 3
    base = torch.randn(k, 3, p, c, dtype=torch.float64, generator=GEN)
    mixing = torch.randn(m, 3, dtype=torch.float64, generator=GEN)
    coef = torch.einsum("ml,klpc->kmpc", mixing, base).contiguous()
    want = coef.clone()
    cut, mix = _cut_u(coef, rows=4, rel=1e-6)
    assert cut.shape == (k, 3, p, c) and mix.shape == (m, 3)
    assert cut.data_ptr() == coef.data_ptr()
    torch.testing.assert_close(torch.einsum("ml,klpc->kmpc", mix, cut), want, rtol=0, atol=1e-12)
    full = torch.randn(k, m, p, c, dtype=torch.float64, generator=GEN)
    same, none = _cut_u(full, rows=4, rel=1e-6)
    assert none is None and same is full


def test_the_cut_in_u_is_relative_to_each_nodes_size():
    """A node whose coefficients are 1e-8 of the others' and point elsewhere is kept at rel = 1e-6 (an
    unweighted cut would drop it): its own values come back to 1e-10 of their size."""
    k, m, p, c = 3, 5, 4, 4
    base = torch.randn(k, 2, p, c, dtype=torch.float64, generator=GEN)
    coef = torch.einsum("ml,klpc->kmpc", torch.randn(m, 2, dtype=torch.float64, generator=GEN), base)
    coef[:, 0] = 1e-8 * torch.randn(k, p, c, dtype=torch.float64, generator=GEN)
    want = coef.clone()
    cut, mix = _cut_u(coef.contiguous(), rows=p, rel=1e-6)
    back = torch.einsum("ml,klpc->kmpc", mix, cut)
    assert float((back[:, 0] - want[:, 0]).abs().max()) <= 1e-10 * float(want[:, 0].abs().max())
    torch.testing.assert_close(back, want, rtol=0, atol=1e-12)


def _inputs():
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return x * torch.linspace(0.7, 1.3, 7, dtype=torch.float64)[:, None]


def test_u_nodes_one_at_equal_scales_and_more_for_a_stricter_tolerance_or_a_farther_prior():
    x = _inputs()
    span, tau_min = 300.0, 1e-2
    assert u_node_count(KernelModel("relu", 2, Prior(T=1e-2, sigma=1.0, sigma0=1.0)), x, x[:4], span, tau_min,
                        1e-5) == 1
    near = KernelModel("relu", 2, Prior(T=1e-2, sigma=1.0, sigma0=0.7))
    far = KernelModel("relu", 2, Prior(T=1e-2, sigma=1.0, sigma0=0.1))
    loose, strict = (u_node_count(near, x, x[:4], span, tau_min, u_tol) for u_tol in (1e-3, 1e-8))
    assert U_LEVELS[0] <= loose < strict
    assert u_node_count(far, x, x[:4], span, tau_min, 1e-3) > loose


@pytest.mark.parametrize("act,sigma0", [("relu", 0.5), ("erf", 2.0)])
def test_the_expansion_between_the_nodes_against_the_kernels(act, sigma0):
    """H(ρ(τ), u) of the expansion on the probed nodes, cut in u, at times s between the nodes, against the
    two-time kernels of kernels.py (H = K_L + ρ C(s,s) K'_L G_L): within the fit's error and the u-tolerance."""
    prior = Prior(T=1e-2, sigma=1.0, sigma0=sigma0)
    model = KernelModel(act, 2, prior)
    x = _inputs()
    span, tau_min, u_tol = 300.0, 1e-2, 1e-6
    nodes = u_node_count(model, x, x[:4], span, tau_min, u_tol)
    ex, = expand(model, x, x[:4], t_span=span, tau_min=tau_min, u_nodes=nodes, u_rel=1e-7, basis_rows=4)
    tau = torch.logspace(-1.5, 2.3, 17, dtype=torch.float64)
    for s in (0.37, 3.1, 19.0, 70.0):
        u = torch.tensor([math.exp(-2 * prior.gamma * s)], dtype=torch.float64)
        rho = torch.exp(-prior.gamma * tau)
        fitted = torch.einsum("nk,kjpq,j->npq", rho[:, None] ** ex.alpha[None, :], ex.coef, ex.basis_u(u)[0])
        s_ = torch.full_like(tau, s)
        tt = model.two_time(s + tau, s_, x, x[:4])
        direct = tt.k + (rho * prior.var(s_))[:, None, None] * tt.kp * tt.g
        scale = float(direct.abs().max())
        assert float((fitted - direct).abs().max()) <= 2 * ex.fit_error + 10 * u_tol * scale
