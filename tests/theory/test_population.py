"""Population drift metrics of theory/population.py against closed forms and wide random networks."""
import functools
import math

import numpy as np
import pytest
import torch

from driftsim.analysis.ridge import fixed_ridge
from driftsim.prior import Prior
from driftsim.sim.simulate import SessionRequest, simulate
from driftsim.tasks import make_task
from driftsim.theory import population as pop
from driftsim.theory.mean import solve
from driftsim.times import record_times


def _stimuli(X=6, N0=20, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(X, N0, generator=g, dtype=torch.float64)


RHO = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.8, 0.95, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("activation", ["relu", "erf", "linear", "tanh"])
@pytest.mark.parametrize("depth", [1, 3])
def test_equal_times_give_one(activation, depth):
    x = _stimuli()
    pv = pop.stationary_pv_correlation(x, depth=depth, activation=activation, sigma=1.3, rho=torch.ones(1))
    assert pv.dtype == torch.float64 and pv.shape == (1,)
    assert abs(float(pv[0]) - 1) < 1e-9


def test_relu_depth_one_arccosine():
    # φ = relu, (u, v) with correlation ρ: E[φφ'] = q (sin θ + (π − θ) ρ)/(2π), E[φ] = √(q/2π), E[φ²] = q/2,
    # so the Pearson correlation is (sin θ + (π − θ) ρ − 1)/(π − 1) for every stimulus, whatever its norm
    x = _stimuli(scale=0.7)
    theta = torch.arccos(RHO)
    expected = (torch.sin(theta) + (math.pi - theta) * RHO - 1) / (math.pi - 1)
    pv = pop.stationary_pv_correlation(x, depth=1, activation="relu", sigma=0.8, rho=RHO)
    torch.testing.assert_close(pv, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_linear_is_rho_to_the_depth(depth):
    # linear φ: h_l = (product of weights) x, Cov/Var = ρ per layer
    pv = pop.stationary_pv_correlation(_stimuli(), depth=depth, activation="linear", sigma=1.7, rho=RHO)
    torch.testing.assert_close(pv, RHO ** depth, rtol=1e-12, atol=1e-14)


def test_erf_small_inputs_and_small_rho_are_linear_in_rho():
    # small pre-activations: erf is linear, PV → ρ; small ρ at O(1) inputs: PV ∝ ρ with the slope of the
    # depth-1 closed form (2/π)·2c/(1+2q) over Var = (2/π) arcsin(2q/(1+2q)), c = σ²ρ|x|²/N0, q = σ²|x|²/N0
    small = pop.stationary_pv_correlation(_stimuli(scale=1e-3), depth=2, activation="erf", sigma=1.0, rho=RHO)
    torch.testing.assert_close(small, RHO ** 2, rtol=0, atol=1e-5)
    x = _stimuli()
    q = (x * x).sum(1) / x.shape[1]
    slope = ((2 / math.pi) * 2 * q / (1 + 2 * q) / ((2 / math.pi) * torch.arcsin(2 * q / (1 + 2 * q)))).mean()
    rho = torch.tensor([1e-4], dtype=torch.float64)
    pv = pop.stationary_pv_correlation(x, depth=1, activation="erf", sigma=1.0, rho=rho)
    assert abs(float(pv[0] / rho[0]) - float(slope)) < 1e-6


def _mc_pv(x, depth, activation, sigma, rho, width, nets, seed):
    """PV correlation of wide random networks whose weights (all layers) have correlation ρ between the
    two times, Pearson over the last layer's units per stimulus, mean over stimuli; mean and SE over nets."""
    g = torch.Generator().manual_seed(seed)
    phi = {"relu": torch.relu, "erf": torch.erf}[activation]
    out = []
    for _ in range(nets):
        a, b = x.T, x.T  # [N0, X]
        n_in = x.shape[1]
        for _ in range(depth):
            w = sigma * torch.randn(width, n_in, generator=g, dtype=torch.float64)
            w2 = rho * w + math.sqrt(1 - rho ** 2) * sigma * torch.randn(width, n_in, generator=g, dtype=torch.float64)
            a, b = phi(w @ a / math.sqrt(n_in)), phi(w2 @ b / math.sqrt(n_in))
            n_in = width
        ac, bc = a - a.mean(0), b - b.mean(0)
        r = (ac * bc).sum(0) / (ac.norm(dim=0) * bc.norm(dim=0))
        out.append(float(r.mean()))
    return np.mean(out), np.std(out, ddof=1) / math.sqrt(nets)


@pytest.mark.parametrize("activation,depth", [("relu", 1), ("relu", 2), ("erf", 1), ("erf", 2)])
def test_stationary_pv_matches_wide_random_networks(activation, depth):
    x = _stimuli(X=5, N0=30, seed=1)
    sigma = 1.2
    for i, rho in enumerate((0.3, 0.8)):
        mean, se = _mc_pv(x, depth, activation, sigma, rho, width=1500, nets=12, seed=10 + i)
        theory = float(pop.stationary_pv_correlation(x, depth=depth, activation=activation, sigma=sigma,
                                                     rho=torch.tensor([rho]))[0])
        assert abs(mean - theory) < 4 * se + 2e-3, (activation, depth, rho, mean, se, theory)


def test_pv_correlation_at_equilibrium_is_the_stationary_form():
    prior = Prior(T=0.5, sigma=1.1, sigma0=1.1)  # σ0 = σ: stationary from t = 0
    x = _stimuli()
    t = torch.tensor([0.0, 0.3, 1.0, 4.0], dtype=torch.float64)
    m = pop.pv_correlation(x, depth=2, activation="relu", prior=prior, times=t)
    rho = torch.exp(-prior.gamma * (t[:, None] - t[None, :]).abs())
    s = pop.stationary_pv_correlation(x, depth=2, activation="relu", sigma=1.1, rho=rho.reshape(-1))
    torch.testing.assert_close(m, s.reshape(4, 4), rtol=1e-10, atol=1e-12)
    assert torch.allclose(m, m.T, atol=1e-12) and torch.allclose(m.diagonal(), torch.ones(4, dtype=torch.float64))


def test_bad_input_errors():
    x = _stimuli()
    with pytest.raises(ValueError, match="observe.layer=3"):
        pop.stationary_pv_correlation(x, depth=2, activation="relu", sigma=1.0, rho=RHO, layer=3)
    with pytest.raises(ValueError, match=r"rho must lie in \[-1, 1\]"):
        pop.stationary_pv_correlation(x, depth=1, activation="relu", sigma=1.0, rho=torch.tensor([1.5]))
    with pytest.raises(ValueError, match="stimuli x"):
        pop.stationary_pv_correlation(torch.full((3, 2), float("nan")), depth=1, activation="relu", sigma=1.0,
                                      rho=RHO)
    with pytest.raises(ValueError, match="times must be"):
        pop.pv_correlation(x, depth=1, activation="relu", prior=Prior(1, 1, 1), times=torch.tensor([-1.0]))


# --- against the simulator's hidden units (SPEC §8 networks: learning, then the frozen-readout drift) ------

T_SIM, T0, T_DRIFT, SESSIONS, WIDTH, NETS = 0.5, 0.5, 4.0, 5, 512, 64


@pytest.fixture(scope="module")
def digits():
    task = make_task("digits", classes=[0, 1], n_per_class=6, n_test=20, seed=0)
    return task, torch.cat([task.x_train, task.x_test])


@functools.cache
def _simulated(activation, depth, sigma0):
    """Session activity [S, E, U, X] of 64 networks of width 512 on 12 + 20 digits: learning to t0 = 0.5
    (γ = 0.5), the readout frozen, 5 sessions over 4 drift time units (2/γ)."""
    task = make_task("digits", classes=[0, 1], n_per_class=6, n_test=20, seed=0)
    t = torch.linspace(0, T_DRIFT, SESSIONS, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops per step: robust on a busy shared machine
    try:
        res = simulate(task.x_train, task.y_train, task.x_test, depth=depth, activation=activation, width=WIDTH,
                       prior=Prior(T_SIM, 1.0, sigma0), t_learn=torch.tensor([0.0, T0], dtype=torch.float64), t0=T0,
                       t_drift=torch.tensor([0.0, T_DRIFT], dtype=torch.float64), dt=0.05, ensemble=NETS, seed=3,
                       device="cpu", progress=False, sessions=SessionRequest(t, depth, NETS, WIDTH))
    finally:
        torch.set_num_threads(threads)
    return res.sessions.activity.double(), t


def _pearson_units(a, b):
    """Pearson correlation over units (dim 1) of [E, U, X] arrays: [E, X]."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


CASES = [(a, d, s0) for a in ("relu", "erf") for d in (1, 2) for s0 in (1.0, 0.5)]


@pytest.mark.parametrize("activation,depth,sigma0", CASES)
def test_closed_forms_match_the_simulated_networks(digits, activation, depth, sigma0):
    # per network: PV correlation (mean over stimuli), rate correlation and similarity over its 512 units;
    # the 64 networks give the Monte-Carlo error band, and the closed form lies in it at every session
    _, x = digits
    act, t = _simulated(activation, depth, sigma0)
    prior = Prior(T_SIM, 1.0, sigma0)
    args = {"depth": depth, "activation": activation, "prior": prior, "times": T0 + t}
    pv, rate = pop.pv_correlation(x, **args), pop.rate_correlation(x, **args)
    sim = pop.similarity(x, **args)

    def se(v):
        return v.std(0) / math.sqrt(NETS)

    for s in range(1, SESSIONS):
        per_net = _pearson_units(act[0], act[s]).mean(-1)
        assert abs(per_net.mean() - pv[0, s]) < 4 * se(per_net), (s, float(per_net.mean()), float(pv[0, s]))
        r = _pearson_units(act[0].mean(-1, keepdim=True), act[s].mean(-1, keepdim=True))[:, 0]
        assert abs(r.mean() - rate[0, s]) < 4 * se(r) + 2e-3, (s, float(r.mean()), float(rate[0, s]))
    ac = act - act.mean(2, keepdim=True)
    norms = ac.norm(dim=2)
    emp = torch.einsum("seux,seuy->sexy", ac, ac) / (norms[..., :, None] * norms[..., None, :])  # [S, E, X, X]
    z = (emp.mean(1) - sim) / (emp.std(1) / math.sqrt(NETS)).clamp_min(1e-9)
    off = ~torch.eye(x.shape[0], dtype=torch.bool)
    assert float(z[:, off].abs().max()) < 5 and float((emp.mean(1) - sim)[:, off].abs().max()) < 0.02
    assert pv[0, -1] < 0.2  # the population has decorrelated ...
    assert float(sim[-1][off].std()) > 0.05  # ... while the stimuli's similarity structure still has one


@pytest.mark.parametrize("activation,depth,sigma0", [("relu", 1, 1.0), ("relu", 2, 0.5), ("erf", 1, 0.5)])
def test_fixed_ridge_decoder_against_the_simulated_networks(digits, activation, depth, sigma0):
    # the infinite-population output k(x,t; X,t0)(K + λI)⁻¹y against the mean over networks of a ridge fit
    # on each network's 512 units at the freeze; the accuracy of a finite population against the theory's
    # prediction for one, from 64 populations of 512 units sampled from the Gaussian process
    task, x = digits
    act, t = _simulated(activation, depth, sigma0)
    prior, P, lam = Prior(T_SIM, 1.0, sigma0), len(task.y_train), 0.5
    y = torch.cat([task.y_train, task.y_test]).numpy()
    fit, ev = np.arange(P), np.arange(P, len(y))
    dec = pop.fixed_decoder(task.x_train, task.y_train, task.x_test, task.y_test, depth=depth, activation=activation,
                            prior=prior, t_fit=T0, times=T0 + t, ridge=lam)
    out, acc = map(np.stack, zip(*[fixed_ridge(act[:, e].numpy(), y[fit], fit, ev, y[ev], lam) for e in range(NETS)]))
    z = (out.mean(0) - dec.output.numpy()) / (out.std(0) / math.sqrt(NETS))
    assert np.abs(z).max() < 4.5, np.abs(z).max()
    drawn = pop.sample_units(x, depth=depth, activation=activation, prior=prior, times=T0 + t, cells=NETS * WIDTH,
                             seed=5).reshape(SESSIONS, NETS, WIDTH, -1).numpy()
    predicted = np.stack([fixed_ridge(drawn[:, e], y[fit], fit, ev, y[ev], lam)[1] for e in range(NETS)])
    band = np.sqrt(acc.var(0) + predicted.var(0)) / math.sqrt(NETS)
    assert (np.abs(acc.mean(0) - predicted.mean(0)) < 4 * band + 0.01).all(), (acc.mean(0), predicted.mean(0))
    assert acc.mean(0)[-1] < acc.mean(0)[0] - 0.1  # the fixed decoder does decay over these sessions


def test_fixed_decoder_is_the_frozen_readout_at_equilibrium():
    # λ = T/σ², fitted on the training set at a freeze at equilibrium: the output is the frozen-readout mean
    # predictor of SPEC §6.3 and its limit §6.4, which theory/mean.solve gets by Volterra integration
    task = make_task("digits", classes=[0, 1], n_per_class=5, n_test=6, seed=0)
    prior = Prior(0.1, 1.0, 1.0)
    t0 = 25 / prior.gamma
    t_drift = record_times(25 / prior.gamma, 6)
    for depth, activation in ((1, "relu"), (2, "erf")):
        th = solve(task.x_train, task.y_train, task.x_test, depth=depth, activation=activation, prior=prior,
                   t_learn=record_times(t0, 4), t0=t0, t_drift=t_drift, tol=1e-5, progress=False)
        dec = pop.fixed_decoder(task.x_train, task.y_train, task.x_test, task.y_test, depth=depth,
                                activation=activation, prior=prior, t_fit=t0, times=t0 + t_drift, ridge=prior.gamma)
        torch.testing.assert_close(dec.output, th.drift.f_test, rtol=0, atol=1e-5)
        torch.testing.assert_close(dec.output_inf, th.drift.f_inf_test, rtol=0, atol=1e-6)
    assert dec.accuracy_inf == 0.5  # erf: the decorrelated limit is exactly 0, a tie on every stimulus


def test_sampled_population_converges_to_the_closed_form_as_one_over_root_u():
    x = _stimuli(X=8, N0=16, seed=2)
    prior = Prior(0.5, 1.0, 0.6)
    t = torch.tensor([0.2, 0.8, 2.0, 5.0], dtype=torch.float64)
    exact = pop.pv_correlation(x, depth=2, activation="relu", prior=prior, times=t)
    rms = {}
    for U in (50, 200, 800, 3200):
        draws = pop.sample_units(x, depth=2, activation="relu", prior=prior, times=t, cells=40 * U, seed=U)
        draws = draws.reshape(len(t), 40, U, -1).transpose(0, 1)  # [draw, S, U, X]
        err = torch.stack([_pearson_units(d[0:1].expand(len(t), -1, -1), d).mean(-1) for d in draws]) - exact[0]
        rms[U] = float(err[:, 1:].pow(2).mean().sqrt())
    ratios = [rms[u] / rms[4 * u] for u in (50, 200, 800)]
    assert all(1.6 < r < 2.5 for r in ratios), (rms, ratios)  # ×4 units: error ÷2


@pytest.mark.parametrize("depth", [1, 2])
def test_sampled_units_have_the_layer_covariance(depth):
    # pre-activations h = φ⁻¹ for linear φ: the empirical covariance over units is Q_l(t,t',x,x'); depth 1 is
    # drawn through the Kronecker factors of Q_1 = C ⊗ x.x'/N0, depth 2 through the Cholesky factor of Q_2
    x = _stimuli(X=4, N0=10, seed=3)
    prior = Prior(0.3, 1.2, 0.7)
    t = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    h = pop.sample_units(x, depth=depth, activation="linear", prior=prior, times=t, cells=200_000, seed=0)
    emp = torch.einsum("scx,rcy->srxy", h, h) / h.shape[1]
    ti, tj = torch.meshgrid(t, t, indexing="ij")
    c = prior.cov(ti, tj)
    expected = (c ** depth)[..., None, None] * (x @ x.T / x.shape[1])  # linear: Q_l = C^l x.x'/N0
    # each entry is a mean of 200 000 products, sd ≤ √2 max|Q| / √n: 6 sd
    torch.testing.assert_close(emp, expected, rtol=0, atol=6 * math.sqrt(2) * float(expected.abs().max()) / math.sqrt(2e5))
