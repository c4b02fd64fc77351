"""SPEC §3: closed-form kernels against wide random networks (autograd, written here independently),
two-time Monte Carlo over the exact Ornstein–Uhlenbeck transition, and fluctuation–dissipation (§5.3)."""
import math

import pytest
import torch

from driftsim.theory.kernels import KernelModel
from driftsim.prior import Prior
from driftsim.theory import reference

pytestmark = pytest.mark.usefixtures("float64")

PHI = {"linear": lambda u: u, "relu": torch.relu, "erf": torch.erf}
WIDTH, SEEDS = 2048, 20


def _inputs(n0=10):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, n0, generator=g)
    x[1] = 0.6 * x[0] + 0.8 * x[1]  # correlated pair
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(n0)
    x[2] *= 1.4  # a different norm
    return x


def _weights(depth, n0, std, gen):
    shapes = [(WIDTH, n0)] + [(WIDTH, WIDTH)] * (depth - 1) + [(WIDTH,)]
    return [std * torch.randn(*s, generator=gen, dtype=torch.float32) for s in shapes]


def _forward(ws, x, phi):
    """SPEC §1.1 with autograd (float32): returns f [p] and the last hidden activity φ(h_L) [p, N]."""
    h = x.float() @ ws[0].T / math.sqrt(x.shape[1])
    for w in ws[1:-1]:
        h = phi(h) @ w.T / math.sqrt(WIDTH)
    act = phi(h)
    return act @ ws[-1] / math.sqrt(WIDTH), act


def _grads(ws, x, phi):
    """∇_Θ f(x_μ) flattened, one row per input: [p, n_params]."""
    rows = []
    for mu in range(x.shape[0]):
        ws_ = [w.clone().requires_grad_(True) for w in ws]
        f, _ = _forward(ws_, x[mu:mu + 1], phi)
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(f.sum(), ws_)]))
    return torch.stack(rows).double()


def _mean_se(samples):
    s = torch.stack(samples)
    return s.mean(0), s.std(0) / math.sqrt(s.shape[0])


@pytest.mark.parametrize("name", ["linear", "relu", "erf"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nngp_and_ntk_match_wide_random_networks(name, depth):
    """σ = σ0 so that one draw of weights serves both: NNGP = σ² (1/N) φ.φ, NTK = ∇f.∇f (autograd)."""
    sigma = 1.2
    model = KernelModel(name, depth, Prior(T=0.01, sigma=sigma, sigma0=sigma))
    x = _inputs()
    gen = torch.Generator().manual_seed(depth * 10 + len(name))
    nngp, ntk = [], []
    for _ in range(SEEDS):
        ws = _weights(depth, x.shape[1], sigma, gen)
        _, act = _forward(ws, x, PHI[name])
        nngp.append((sigma ** 2 * act @ act.T / WIDTH).double())
        g = _grads(ws, x, PHI[name])
        ntk.append(g @ g.T)
    for emp, theory in ((nngp, model.nngp(x, x)), (ntk, model.ntk(x, x))):
        mean, se = _mean_se(emp)
        assert ((mean - theory).abs() <= 4 * se + 1e-3 * theory.abs()).all(), (mean, theory, se)


@pytest.mark.parametrize("name", ["linear", "relu", "erf"])
def test_ndk_at_zero_is_ntk(name):
    model = KernelModel(name, 2, Prior(T=0.1, sigma=1.5, sigma0=0.7))
    x = _inputs()
    zero = torch.zeros(1)
    assert torch.allclose(reference.ndk(model, zero, zero, x, x)[0], model.ntk(x, x), atol=1e-10, rtol=0)


def test_linear_closed_form_depth_dependence():
    """SPEC §3.3: K_ntk = (L+1) σ0^(2L) x.x'/N0 and K_gp = σ^(2(L+1)) x.x'/N0 for linear φ."""
    x = _inputs()
    dot = x @ x.T / x.shape[1]
    for depth in (1, 2, 3):
        model = KernelModel("linear", depth, Prior(T=0.1, sigma=1.3, sigma0=0.9))
        assert torch.allclose(model.ntk(x, x), (depth + 1) * 0.9 ** (2 * depth) * dot)
        assert torch.allclose(model.nngp(x, x), 1.3 ** (2 * (depth + 1)) * dot)


@pytest.mark.parametrize("sigma0", [1.3, 0.9])
def test_nngp_and_ntk_together_match_their_closed_forms(sigma0):
    """KernelModel.nngp_ntk (one recursion when σ0 = σ): linear φ's closed forms of SPEC §3.3, and relu's kernels
    as nngp and ntk compute them one by one."""
    x = _inputs()
    dot = x @ x.T / x.shape[1]
    for depth in (1, 3):
        prior = Prior(T=0.1, sigma=1.3, sigma0=sigma0)
        k_gp, k_ntk = KernelModel("linear", depth, prior).nngp_ntk(x, x)
        torch.testing.assert_close(k_gp, 1.3 ** (2 * (depth + 1)) * dot)
        torch.testing.assert_close(k_ntk, (depth + 1) * sigma0 ** (2 * depth) * dot)
        relu = KernelModel("relu", depth, prior)
        for together, alone in zip(relu.nngp_ntk(x, x[:2]), (relu.nngp(x, x[:2]), relu.ntk(x, x[:2]))):
            torch.testing.assert_close(together, alone, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name,depth", [("relu", 2), ("erf", 1), ("erf", 2)])
def test_two_time_kernels_match_ou_monte_carlo(name, depth):
    """Weights drawn at s and t from the exact OU transition of SPEC §2 (written out here)."""
    prior = Prior(T=0.5, sigma=1.0, sigma0=0.6)  # γ = 0.5, transient still present at s
    gamma = prior.gamma
    s, t = 0.7, 1.9
    model = KernelModel(name, depth, prior)
    x = _inputs()
    gen = torch.Generator().manual_seed(11 + depth)

    def evolve(ws, dt):
        a = math.exp(-gamma * dt)
        return [a * w + math.sqrt(1 - a * a) * prior.sigma * torch.randn(w.shape, generator=gen, dtype=w.dtype)
                for w in ws]

    k_emp, ndk_emp = [], []
    for _ in range(SEEDS):
        w_s = evolve(_weights(depth, x.shape[1], prior.sigma0, gen), s)
        w_t = evolve(w_s, t - s)
        _, act_t = _forward(w_t, x, PHI[name])
        _, act_s = _forward(w_s, x, PHI[name])
        k_emp.append((act_t @ act_s.T / WIDTH).double())
        ndk_emp.append(math.exp(-gamma * (t - s)) * _grads(w_t, x, PHI[name]) @ _grads(w_s, x, PHI[name]).T)
    tt = torch.tensor([t]), torch.tensor([s])
    for emp, theory in ((k_emp, model.two_time(*tt, x, x).k[0]), (ndk_emp, reference.ndk(model, *tt, x, x)[0])):
        mean, se = _mean_se(emp)
        assert ((mean - theory).abs() <= 4 * se + 1e-3 * theory.abs()).all(), (mean, theory, se)


@pytest.mark.parametrize("name", ["relu", "erf", "linear"])
@pytest.mark.parametrize("depth", [1, 3])
def test_fluctuation_dissipation(name, depth):
    """SPEC §5.3: in equilibrium K_d(τ) = (1/T) ∂K_GP(t,t')/∂t' (central differences in t')."""
    prior = Prior(T=0.05, sigma=1.1, sigma0=0.5)
    model = KernelModel(name, depth, prior)
    x = _inputs()
    t = 80.0 / prior.gamma  # transient e^(−2γt) is gone
    for tau in (0.05 / prior.gamma, 0.5 / prior.gamma, 3.0 / prior.gamma):
        tp = t - tau
        d = 1e-4 / prior.gamma
        kgp = lambda s: model.prior_cov(torch.tensor([t]), torch.tensor([s]), x, x)[0]  # noqa: E731
        deriv = (kgp(tp + d) - kgp(tp - d)) / (2 * d)
        ndk = reference.ndk(model, torch.tensor([t]), torch.tensor([tp]), x, x)[0]
        assert torch.allclose(ndk, deriv / prior.T, rtol=1e-6, atol=1e-9 * ndk.abs().max())


def test_bad_model_parameters_name_the_key():
    prior = Prior(T=0.1, sigma=1.0, sigma0=1.0)
    with pytest.raises(ValueError, match=r"model.depth=0"):
        KernelModel("relu", 0, prior)
    with pytest.raises(ValueError, match=r"model.activation='foo'"):
        KernelModel("foo", 1, prior)
    for key, kwargs in (("T", dict(T=0.0, sigma=1, sigma0=1)), ("sigma", dict(T=1, sigma=-1, sigma0=1)),
                        ("sigma0", dict(T=1, sigma=1, sigma0=float("nan")))):
        with pytest.raises(ValueError, match=rf"dynamics.{key}=.*positive"):
            Prior(**kwargs)


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])  # tanh: by quadrature
@pytest.mark.parametrize("depth", [1, 3])
def test_correlated_diagonal_is_the_diagonal_of_every_pair(name, depth):
    # each point with itself at the two times, from its own recursion, against the [B, p, p] recursion
    model = KernelModel(name, depth, Prior(T=0.5, sigma=1.0, sigma0=0.6))
    x = _inputs()
    c_tt, c_ss = torch.tensor([0.5, 0.9, 1.0]), torch.tensor([0.8, 0.9, 1.0])
    c_ts = torch.tensor([0.1, 0.6, 1.0]) * (c_tt * c_ss).sqrt()
    pairs, alone = model.correlated(c_ts, c_tt, c_ss, x, x), model.correlated_diagonal(c_ts, c_tt, c_ss, x)
    for every, own in ((pairs.k, alone.k), (pairs.kp, alone.kp), (pairs.g, alone.g)):
        # to 1e-7 only: at c_ts² = c_tt c_ss relu's K' is arccos(1 − ε), which turns rounding of 1e-16 into 1e-8
        torch.testing.assert_close(own, torch.diagonal(every, dim1=1, dim2=2), rtol=1e-7, atol=1e-9)
