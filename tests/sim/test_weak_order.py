"""Weak order of the Langevin schemes (SPEC §8): the error of E g(Θ(t)) at fixed t falls as dt^p with p the
order each ``Scheme`` declares, measured as diffrax measures its solvers' orders, by a fit of log|error|
against log dt over three step sizes.

Problem: the synthetic task of SPEC §7 with P = 2 (N0 = 3, one test point), depth 1, erf, width 8,
T = 0.5, σ = σ0 = 1 (γ = 0.5, λ_max(K_ntk) ≈ 3.1 at initialisation), t = 1; g(Θ) = |f(X)|² over the three
points. Steps dt = 1/32, 1/16, 1/8; the reference is the Richardson extrapolation 2 g_{h} − g_{2h} of the
runs at h = 1/256 and 1/128, whose own O(h) error cancels. Every run starts from the same ensemble and is
driven by the same Brownian paths (a coarse step's noise is the normalised sum of the fine increments it
spans), so the differences between runs have a Monte-Carlo error O(dt/sqrt(E)) rather than O(1/sqrt(E)).
"""
import math

import numpy as np
import pytest
import torch

from driftsim.prior import Prior
from driftsim.sim.networks import Ensemble, init_ensemble
from driftsim.sim.schemes import State, euler, langevin
from driftsim.tasks import synthetic_task

F64 = torch.float64
ENSEMBLE, WIDTH, T_END = 2048, 8, 1.0
STEPS = (1 / 32, 1 / 16, 1 / 8)
FINE = 1 / 256  # the finest increments of the Brownian paths; reference runs at FINE and 2·FINE


class BrownianNoise:
    """The noise interface the gradient schemes use (``add_params_``), drawn so that runs at different step
    sizes follow one Brownian path per network: a step spanning m fine increments adds std · Σ_j ξ_j / sqrt(m),
    the ξ_j drawn from one generator in the same order at every step size. Antithetic pairs as in
    ``sim.noise.Noise``: shared hidden noise, opposite readout noise."""

    def __init__(self, seed: int, fine_per_step: int):
        self.generator, self.m = torch.Generator().manual_seed(seed), fine_per_step

    def add_params_(self, params: list, std: float) -> None:
        live = [(i == len(params) - 1, p) for i, p in enumerate(params) if p is not None]
        pairs = [p.view(p.shape[0] // 2, 2, *p.shape[1:]) for _, p in live]
        xis = [torch.zeros(q.shape[0], 1, *q.shape[2:], dtype=q.dtype) for q in pairs]
        for _ in range(self.m):
            for xi in xis:
                xi.add_(torch.randn(xi.shape, dtype=xi.dtype, generator=self.generator))
        for (flip, _), q, xi in zip(live, pairs, xis):
            xi.mul_(std / math.sqrt(self.m))
            q[:, :1].add_(xi)
            q[:, 1:].add_(-xi if flip else xi)


def _moment(scheme, net: Ensemble, x_all: torch.Tensor, h: float) -> torch.Tensor:
    """g = |f(X)|² at T_END after steps of h from ``net``, averaged over each antithetic pair: [E/2]."""
    state = State(net.clone(), 0.0, BrownianNoise(seed=7, fine_per_step=round(h / FINE)))
    for _ in range(round(T_END / h)):
        scheme.step(state, h)
    return state.net.forward(x_all).f.pow(2).sum(1).view(-1, 2).mean(1)


@pytest.mark.parametrize("make", [langevin, euler], ids=["langevin", "euler"])
def test_weak_error_falls_at_the_declared_order(make):
    """Measured: slopes 1.06 (langevin) and 1.07 (euler), 1.04–1.07 over three initial ensembles; errors
    0.012, 0.025, 0.050 (langevin) and 0.017, 0.037, 0.076 (euler), each 16–20 standard errors. The margin
    0.15 tells order 1 from 0.5 and 2, and from Euler–Maruyama with its noise off by a factor 1 + sqrt(dt)
    (error O(sqrt(dt)) + O(dt): slope 0.76)."""
    task = synthetic_task(2, 0.75)
    prior = Prior(T=0.5, sigma=1.0, sigma0=1.0)
    x_all = torch.cat([task.x_train, task.x_test])
    net = init_ensemble(ENSEMBLE, x_all.shape[1], WIDTH, 1, "erf", prior.sigma0,
                        generator=torch.Generator().manual_seed(1), dtype=F64, antithetic=True)
    scheme = make(task.x_train, task.y_train, prior)
    assert scheme.name == make.__name__ and scheme.order == 1
    reference = 2 * _moment(scheme, net, x_all, FINE) - _moment(scheme, net, x_all, 2 * FINE)
    errors, ses = [], []
    for h in STEPS:
        d = _moment(scheme, net, x_all, h) - reference
        errors.append(float(d.mean()))
        ses.append(float(d.std() / math.sqrt(len(d))))
    errors, ses = np.array(errors), np.array(ses)
    assert (np.sign(errors) == np.sign(errors[0])).all(), errors
    assert (np.abs(errors) > 8 * ses).all(), (errors, ses)  # the slope is not made by Monte-Carlo noise
    slope = np.polyfit(np.log(STEPS), np.log(np.abs(errors)), 1)[0]
    assert abs(slope - scheme.order) < 0.15, (slope, errors, ses)
