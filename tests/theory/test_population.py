"""Population drift metrics of theory/population.py against closed forms and wide random networks."""
import math

import numpy as np
import pytest
import torch

from driftsim.prior import Prior
from driftsim.theory import population as pop


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
