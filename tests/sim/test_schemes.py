"""Simulation of network ensembles (SPEC §1.3, §1.4, §2, §6, §8): prior statistics of every scheme, the MPL
transition (exact Gaussian parts, inner sampler, SPEC's AR(1) claims), time discretisation, divergence,
recording and the freeze protocol, and the agreement of the ensemble mean with driftsim.theory.

Monte-Carlo sizes are modest (2 shared cores); the theory comparisons at width 512 and depth 2 are slow.
"""
import math

import pytest
import torch

from driftsim.activations import get_activation
from driftsim.sim.noise import Noise
from driftsim.sim.schemes import euler, langevin, mpl, mpl_readout_draw, prior_coefficients, prior_drift
from driftsim.sim.simulate import simulate
from driftsim.sim.networks import Ensemble, init_ensemble
from driftsim.prior import Prior
from driftsim.theory import reference
from driftsim.tasks import synthetic_task
from driftsim.theory.mean import solve
from driftsim.times import record_times

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _no_data(n0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty training set: the loss vanishes and only the prior acts."""
    return torch.zeros(0, n0, dtype=F64), torch.zeros(0, dtype=F64)


def _weights(net: Ensemble) -> torch.Tensor:
    return torch.cat([p.flatten() for p in net.params]).clone()


def _mean_and_se(f: torch.Tensor, antithetic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble mean over dim 1 of f [n, E, ...] and its Monte-Carlo standard error (pairs are the
    independent units of an antithetic ensemble)."""
    f = f.double()
    if antithetic:
        f = f.view(f.shape[0], -1, 2, *f.shape[2:]).mean(2)
    return f.mean(1), f.std(1) / math.sqrt(f.shape[1])


# --- prior statistics (SPEC §2, §1.3) ---------------------------------------------------------------

def test_ou_coefficients_are_the_exact_prior_transition():
    prior = Prior(0.3, 1.2, 0.7)
    theta, xi = torch.randn(5, dtype=F64, generator=_gen(0)), torch.randn(5, dtype=F64, generator=_gen(1))
    decay, std = prior_coefficients("ou", prior, 0.37)
    torch.testing.assert_close(decay * theta + std * xi, reference.transition(prior, theta, 0.37, xi))


@pytest.mark.parametrize("scheme", ["langevin", "euler"])
def test_prior_only_weights_follow_the_ou_covariance(scheme):
    """SPEC §2: with the loss removed, <θ(t)θ(t')> = C(t,t') for every weight (σ0 < σ: transient visible)."""
    prior, dt = Prior(T=0.5, sigma=1.0, sigma0=0.4), 0.02  # γ = 0.5
    net = init_ensemble(64, 8, 48, 2, "relu", prior.sigma0, generator=_gen(0), dtype=F64)
    step = {"langevin": langevin, "euler": euler}[scheme](*_no_data(8), prior)
    state = step.init(net, _gen(1))
    snaps, marks = {0.0: _weights(net)}, {25: 0.5, 50: 1.0, 100: 2.0, 200: 4.0}
    with state.noise:
        for k in range(1, 201):
            step.step(state, dt)
            if k in marks:
                snaps[marks[k]] = _weights(net)
    # Euler–Maruyama's own moments differ by O(γ dt) (stationary variance σ²/(1 − γdt/2))
    bias = 0.0 if scheme == "langevin" else prior.gamma * dt
    for t, s in [(0.5, 0.5), (4.0, 4.0), (0.5, 0.0), (2.0, 0.5), (4.0, 1.0), (1.0, 1.0)]:
        prod = snaps[t] * snaps[s]
        want = float(prior.cov(torch.tensor(t), torch.tensor(s)))
        se = prod.std() / math.sqrt(prod.numel())
        assert abs(prod.mean() - want) < 4 * se + bias * abs(want), (t, s)


@pytest.mark.parametrize("readout", [False, True])
def test_drift_transitions_are_exact_ou_and_freeze_the_readout(readout):
    """SPEC §6.1: the drift step moves the hidden weights (and the readout only for freeze=none) by the exact
    OU transition over any interval."""
    prior = Prior(T=0.5, sigma=1.0, sigma0=1.6)
    net = init_ensemble(64, 8, 48, 2, "erf", prior.sigma0, generator=_gen(2), dtype=F64)
    a0, w0 = net.readout.clone(), torch.cat([w.flatten() for w in net.hidden]).clone()
    drift = prior_drift(prior, "ou", readout=readout)
    state = drift.init(net, _gen(3))
    drift.step(state, 0.3)
    drift.step(state, 1.7)  # t = 2
    assert state.t == pytest.approx(2.0)
    assert torch.equal(net.readout, a0) != readout
    w = torch.cat([w.flatten() for w in net.hidden])
    for prod, t, s in [(w * w, 2.0, 2.0), (w * w0, 2.0, 0.0)]:
        want = float(prior.cov(torch.tensor(t), torch.tensor(s)))
        assert abs(prod.mean() - want) < 4 * prod.std() / math.sqrt(prod.numel())


def test_mpl_prior_only_chain_is_the_ar1_of_spec():
    """SPEC §1.3 under the prior alone: θ_t = κθ_{t−1} + sqrt(v)ξ, κ = 1/(1 + γ/λ),
    v = 2σ²(γ/λ)/(1 + γ/λ), stationary variance σ²(1 + γ/λ)/(1 + γ/(2λ)) (6 % above σ² here), and the
    drift phase's closed-form composition of ⌈λΔ⌉ steps has the same law."""
    prior, lam = Prior(T=0.5, sigma=1.0, sigma0=0.4), 4.0  # γ/λ = 1/8
    r = prior.gamma / lam
    kappa, v = 1 / (1 + r), 2 * prior.sigma ** 2 * r / (1 + r)
    stationary = prior.sigma ** 2 * (1 + r) / (1 + r / 2)
    net = init_ensemble(64, 8, 48, 2, "relu", prior.sigma0, generator=_gen(4), dtype=F64)
    chain = mpl(*_no_data(8), prior, inner_steps=1)
    state = chain.init(net, _gen(5))
    w0 = _weights(net)
    for _ in range(5):
        chain.step(state, 1 / lam)
    w5 = _weights(net)
    for _ in range(55):
        chain.step(state, 1 / lam)
    w60 = _weights(net)
    assert state.stats["accepted"] == state.stats["proposed"]  # no loss: the proposal is the exact density
    var5 = kappa ** 10 * prior.sigma0 ** 2 + v * (1 - kappa ** 10) / (1 - kappa ** 2)
    composed = prior_drift(prior, "mpl", lam, readout=True)
    net2 = init_ensemble(64, 8, 48, 2, "relu", prior.sigma0, generator=_gen(4), dtype=F64)
    cstate = composed.init(net2, _gen(6))
    composed.step(cstate, 5 / lam)
    w5c = _weights(net2)
    for prod, want in [(w5 * w5, var5), (w5 * w0, kappa ** 5 * prior.sigma0 ** 2), (w60 * w60, stationary),
                       (w5c * w5c, var5), (w5c * w0, kappa ** 5 * prior.sigma0 ** 2)]:
        assert abs(prod.mean() - want) < 4 * prod.std() / math.sqrt(prod.numel())
    assert abs(stationary - prior.sigma ** 2) > 10 * (w60 * w60).std() / math.sqrt(w60.numel())


# --- MPL transition (SPEC §1.3) ----------------------------------------------------------------------

@pytest.mark.parametrize("antithetic", [False, True])
def test_mpl_readout_draw_is_the_exact_gaussian(antithetic):
    """Cost quadratic in the moving weights (readout given the hidden layer): the transition density is
    N(A⁻¹(By + λa_p), 2T A⁻¹), A = (λ + γ)I + BBᵀ, checked against a dense solve; antithetic partners
    get the opposite noise, so every pair averages to the exact mean."""
    E, N, P, lam = 20000, 6, 3, 2.5
    prior = Prior(T=0.4, sigma=1.0, sigma0=1.0)
    act = torch.rand(N, P, dtype=F64, generator=_gen(7)) * 2
    a_prev = torch.randn(N, dtype=F64, generator=_gen(8))
    y = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
    a = mpl_readout_draw(act.expand(E, N, P), y, a_prev.expand(E, N), lam, prior, Noise(antithetic, _gen(9)))
    b = act / math.sqrt(N)
    A = (lam + prior.gamma) * torch.eye(N, dtype=F64) + b @ b.T
    mean = torch.linalg.solve(A, b @ y + lam * a_prev)
    cov = 2 * prior.T * torch.linalg.inv(A)
    if antithetic:
        torch.testing.assert_close(a.view(-1, 2, N).mean(1), mean.expand(E // 2, N), rtol=0, atol=1e-12)
        a = a[0::2]
    n = len(a)
    assert torch.all((a.mean(0) - mean).abs() < 4 * cov.diagonal().sqrt() / math.sqrt(n))
    emp = torch.cov(a.T)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / n).sqrt()
    assert torch.all((emp - cov).abs() < 4.5 * se)


def _two_weight_transition_moments(wp, ap, prior, lam, activation):
    """Moments of p(Θ|Θ_p) ∝ exp{−(β/2)[E(Θ) + (λ/2)|Θ − Θ_p|²]} for the one-unit network f = a φ(w)
    (N0 = N = 1, x = 1, y = 1), by quadrature on a 2-D grid."""
    g = torch.linspace(-6, 6, 1201, dtype=F64)
    w, a = torch.meshgrid(g, g, indexing="ij")
    cost = 0.5 * (a * activation.phi(w) - 1) ** 2 + prior.gamma / 2 * (w ** 2 + a ** 2)
    u = (cost + lam / 2 * ((w - wp) ** 2 + (a - ap) ** 2)) / (2 * prior.T)
    p = torch.exp(-(u - u.min()))
    p /= p.sum()
    return {k: float((v * p).sum()) for k, v in dict(w=w, a=a, ww=w * w, aa=a * a, wa=w * a).items()}


def test_mpl_inner_sampler_matches_the_transition_density():
    """Where the cost is not quadratic, the inner MALA sweeps sample the exact transition density: checked
    on a one-unit network at a small λ (= 2, one step of length 0.5), where the first-order draw alone is
    far off."""
    prior, lam, wp, ap, E = Prior(T=0.5, sigma=1.0, sigma0=1.0), 2.0, 0.3, -0.8, 40000
    act = get_activation("erf")
    want = _two_weight_transition_moments(wp, ap, prior, lam, act)
    x, y = torch.ones(1, 1, dtype=F64), torch.ones(1, dtype=F64)
    worst = {}
    for inner in (0, 6):
        net = Ensemble([torch.full((E, 1, 1), wp, dtype=F64)], torch.full((E, 1), ap, dtype=F64), act)
        step = mpl(x, y, prior, inner_steps=inner)
        step.step(step.init(net, _gen(10)), 1 / lam)
        w, a = net.hidden[0].flatten(), net.readout.flatten()
        got = dict(w=w, a=a, ww=w * w, aa=a * a, wa=w * a)
        worst[inner] = max(abs(float(v.mean()) - want[k]) / (float(v.std()) / math.sqrt(E)) for k, v in got.items())
    assert worst[6] < 4.5
    assert worst[0] > 10  # the test can tell a wrong transition


# --- time discretisation ----------------------------------------------------------------------------

def _small_run(scheme="langevin", dt=0.02, lam=50.0, seed=0, antithetic=True, t0=None, freeze="readout",
               activation="erf", t_end=8.0, drift_end=8.0, width=128, ensemble=256, units=0, dtype="float32",
               progress=False, inner=2):
    """Synthetic task (P = 4), depth 1, T = 0.25 (γ = 0.25), σ = σ0 = 1."""
    task = synthetic_task(4, 0.75)
    t_drift = record_times(drift_end, 6, t_first=0.1) if t0 is not None else None
    return simulate(task.x_train, task.y_train, task.x_test, depth=1, activation=activation, width=width,
                    prior=Prior(0.25, 1.0, 1.0), t_learn=record_times(t_end, 8, t_first=0.1), t0=t0, t_drift=t_drift,
                    freeze=freeze, scheme=scheme, dt=dt, lam=lam, mpl_inner_steps=inner, ensemble=ensemble,
                    dtype=dtype, antithetic=antithetic, activity_units=units, seed=seed, progress=progress)


def _gap(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """|difference| of two plain ensembles' mean test predictors over the recorded times, and the
    Monte-Carlo error sd/sqrt(E) of one ensemble mean."""
    m_a, _ = _mean_and_se(a.learn.f_test, False)
    m_b, se = _mean_and_se(b.learn.f_test, False)
    return (m_a - m_b).abs().flatten(), se.flatten()


def test_halving_dt_changes_the_mean_less_than_its_monte_carlo_error():
    gap, se = _gap(_small_run(dt=0.04, antithetic=False), _small_run(dt=0.02, antithetic=False))
    assert torch.all(gap[1:] < se[1:])


def test_euler_and_exact_prior_schemes_agree_at_small_dt():
    gap, se = _gap(_small_run("euler", dt=0.01, antithetic=False), _small_run("langevin", dt=0.01, antithetic=False))
    assert torch.all(gap[1:] < se[1:])


def test_mpl_at_large_lambda_reproduces_langevin():
    """SPEC §1.3: for large λ an MPL step is the Langevin step with dt = 1/λ. The runs start equal and draw
    different noise: the Monte-Carlo error is that of the per-network differences."""
    run_mpl = _small_run("mpl", lam=50.0, antithetic=False, width=64, inner=1)
    run_langevin = _small_run("langevin", dt=0.02, antithetic=False, width=64)
    gap, se = _mean_and_se(run_mpl.learn.f_test - run_langevin.learn.f_test, False)
    assert torch.all(gap.abs()[1:] < 3 * se[1:])
    assert run_mpl.info["mpl_acceptance"] > 0.9 and run_mpl.info["dt"] == pytest.approx(0.02)


def test_antithetic_pairs_cut_the_monte_carlo_error():
    plain, pairs = _small_run(antithetic=False), _small_run(antithetic=True)
    m0, se0 = _mean_and_se(plain.learn.f_test, False)
    m1, se1 = _mean_and_se(pairs.learn.f_test, True)
    assert torch.all(se1[1:] < se0[1:] / 2)
    assert torch.all((m0 - m1).abs()[1:] < 4 * (se0 ** 2 + se1 ** 2).sqrt()[1:])


# --- divergence ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["langevin", "euler"])
def test_a_diverging_step_size_raises_naming_dt(scheme):
    with pytest.raises(ValueError, match=r"dynamics\.dt=3 .*dynamics\.dt < "):
        _small_run(scheme, dt=3.0, t_end=200.0, activation="relu")


# --- recording and the freeze protocol ----------------------------------------------------------------

def test_records_shapes_times_and_info():
    res = _small_run(t0=2.0, units=3, width=16, ensemble=8, progress=True)
    n, m = len(res.learn.t), len(res.drift.t)
    assert res.learn.f_train.shape == (n, 8, 4) and res.learn.f_test.shape == (n, 8, 1)
    assert res.drift.f_train.shape == (m, 8, 4) and res.learn.f_train.dtype == torch.float32
    assert res.learn.activity_train.shape == (n, 8, 4, 3) and res.drift.activity_test.shape == (m, 8, 1, 3)
    assert torch.equal(res.learn.t, record_times(8.0, 8, t_first=0.1)) and res.t0 == 2.0
    assert all(torch.isfinite(f).all() for f in (res.learn.f_train, res.drift.f_test))
    assert {"scheme", "dt", "steps", "wall_time_s", "device", "ntk_max_eig"} <= set(res.info)
    assert res.info["steps"] >= 8.0 / 0.02
    # the drift phase starts from the learning run's state at t0 (2.0 is not a recorded learning time)
    assert 2.0 not in res.learn.t.tolist() and torch.isfinite(res.drift.f_test[0]).all()


def test_drift_starts_where_learning_is_and_leaves_learning_undisturbed():
    t_learn = record_times(8.0, 8, t_first=0.1)
    t0 = float(t_learn[5])
    with_drift, without = _small_run(t0=t0, width=16, ensemble=8), _small_run(width=16, ensemble=8)
    assert torch.equal(with_drift.drift.f_test[0], with_drift.learn.f_test[5])
    assert torch.equal(with_drift.learn.f_test, without.learn.f_test)
    assert without.drift is None and without.t0 is None
    again, other = _small_run(width=16, ensemble=8), _small_run(width=16, ensemble=8, seed=1)
    assert torch.equal(again.learn.f_train, without.learn.f_train)
    assert not torch.equal(other.learn.f_train, without.learn.f_train)
    assert _small_run(width=16, ensemble=8, dtype="float64").learn.f_test.dtype == F64


def test_freezing_nothing_drifts_to_chance():
    """SPEC §8 control: with every weight drifting under the prior, the mean predictor decays to 0."""
    res = _small_run(t0=2.0, freeze="none", activation="relu", drift_end=40.0)  # e^(−γ·40) ≈ 5e-5
    mean, se = _mean_and_se(res.drift.f_test[-1:], True)
    start, _ = _mean_and_se(res.drift.f_test[:1], True)
    assert start.abs().item() > 0.3 and abs(mean.item()) < 4 * se.item()


@pytest.mark.parametrize("bad", [dict(t_drift=torch.tensor([0.0, 1.0])), dict(t0=1.0),
                                 dict(t_learn=torch.tensor([0.1, 1.0])), dict(t_learn=torch.tensor([0.0, 1.0, 1.0])),
                                 dict(units=17)])
def test_bad_arguments_are_named(bad):
    task = synthetic_task(4, 0.75)
    kwargs = dict(t_learn=torch.tensor([0.0, 1.0]), t_drift=None)
    kwargs.update({k: v for k, v in bad.items() if k in ("t_learn", "t_drift")})
    with pytest.raises(ValueError, match="t_drift|t_learn|activity_units"):
        simulate(task.x_train, task.y_train, task.x_test, depth=1, activation="relu", width=16,
                 prior=Prior(0.25, 1.0, 1.0), t0=bad.get("t0"), ensemble=4, activity_units=bad.get("units", 0),
                 seed=0, progress=False, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_returns_cpu_records():
    task = synthetic_task(4, 0.75)
    res = simulate(task.x_train, task.y_train, task.x_test, depth=1, activation="relu", width=64,
                   prior=Prior(0.25, 1.0, 1.0), t_learn=record_times(1.0, 4), dt=0.02, ensemble=16, seed=0,
                   device="cuda", progress=False)
    assert res.info["device"].startswith("cuda") and res.learn.f_test.device.type == "cpu"


# --- theory against simulation: the ensemble mean follows the mean predictor -------------------------

# (depth, φ, σ0, σ, T, dt). γ = T/σ² sets the diffusive time scale (runs end at 5/γ). The weak error of a
# step grows with dt·λ_max(K_ntk) (gradient part) and with 2T·dt/min(σ0, σ)² (the noise a step adds
# relative to the weight variance): both are kept ≲ 0.1 at depth 1. Depth 1 covers relu and erf at
# σ0/σ = 0.5 and 1.5; depth 2 (slow: 512² weights per network, ~0.5 s a step here) a Latin square of the
# same factors, with coarser steps (2T·dt/σ0² = 0.4 for erf) that its allowance still covers.
THEORY_CASES = [
    pytest.param(1, "relu", 0.5, 1.0, 0.2, 0.025, id="L1-relu-ratio0.5"),
    pytest.param(1, "relu", 1.5, 1.0, 0.2, 0.03, id="L1-relu-ratio1.5"),
    pytest.param(1, "erf", 0.5, 1.0, 0.2, 0.025, id="L1-erf-ratio0.5"),
    pytest.param(1, "erf", 1.5, 1.0, 0.2, 0.05, id="L1-erf-ratio1.5"),
    pytest.param(2, "relu", 1.0, 0.8, 0.32, 0.1, id="L2-relu-ratio1.25", marks=pytest.mark.slow),
    pytest.param(2, "erf", 0.5, 1.0, 0.5, 0.1, id="L2-erf-ratio0.5", marks=pytest.mark.slow),
]
WIDTH, ENSEMBLE = 512, 256
# Stated allowance for the biases of the mean that Monte Carlo does not see: O(1/N) finite width and the
# O(dt) weak error. Measured |sim − theory| at width 512: ≤ 0.011 with standard errors ≤ 0.0035.
ALLOWANCE = 4.0 / WIDTH


@pytest.mark.parametrize("depth,activation,sigma0,sigma,T,dt", THEORY_CASES)
def test_ensemble_mean_follows_the_theory(depth, activation, sigma0, sigma, T, dt):
    """SPEC §5, §6.2: the antithetic ensemble's mean test predictor agrees with the theory's mean predictor
    within 4 standard errors + ALLOWANCE at ≥ 90 % of the recorded times, over the learning run (gradient
    phase, diffusive phase, equilibrium at 5/γ) and after freezing the readout at t0 = 1/γ."""
    task = synthetic_task(4, 0.75)
    prior = Prior(T, sigma, sigma0)
    t_end, t0 = 5 / prior.gamma, 1 / prior.gamma
    t_learn, t_drift = record_times(t_end, 20, t_first=0.05), record_times(t_end, 10, t_first=0.1)
    theory = solve(task.x_train, task.y_train, task.x_test, depth=depth, activation=activation, prior=prior,
                   t_learn=t_learn, t0=t0, t_drift=t_drift, progress=False)
    res = simulate(task.x_train, task.y_train, task.x_test, depth=depth, activation=activation, width=WIDTH,
                   prior=prior, t_learn=t_learn, t0=t0, t_drift=t_drift, dt=dt, ensemble=ENSEMBLE, antithetic=True,
                   seed=11, progress=False)
    for phase, sim, want in [("learn", res.learn, theory.learn.f_test), ("drift", res.drift, theory.drift.f_test)]:
        mean, se = _mean_and_se(sim.f_test, True)
        gap = (mean - want).abs()
        inside = gap <= 4 * se + ALLOWANCE
        assert inside.double().mean() >= 0.9, (phase, gap.flatten().tolist(), se.flatten().tolist())
        assert gap.max() < 4 * se.max() + 3 * ALLOWANCE, phase  # and no time far off
