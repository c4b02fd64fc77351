"""SPEC §10: the covariance of the predictor over the ensemble against closed forms — the prior at t = 0,
the NTK ensemble covariance of Lee et al. (2019) as T → 0, the GP posterior covariance at equilibrium, the
NNGP prior after a long drift for odd φ — and against Langevin ensembles of finite networks (§6, §8)."""
import math

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import integrate, stats

from driftsim.config import DriftsimConfig
from driftsim.analysis.decode import decode_theory, network_accuracy
from driftsim.theory.expansion import expand
from driftsim.theory import covariance, discretisation
from driftsim.theory.covariance import predictor_covariance
from driftsim.theory.discretisation import discretise
from driftsim.theory.kernels import KernelModel
from driftsim.sim.simulate import simulate
from driftsim.prior import Prior
from driftsim.io.store import StoreError, read_run, write_run
from driftsim.tasks import synthetic_task
from driftsim.theory.mean import solve
from driftsim.times import record_times
from driftsim.theory.volterra import exponential_pair_weights

pytestmark = pytest.mark.usefixtures("float64")


def points(p=5, q=2, n0=6, seed=0):
    """Generic inputs (unequal norms, no symmetry between the points)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(p, n0, generator=g), torch.randn(q, n0, generator=g)


def test_at_the_start_it_is_the_prior_covariance():
    """t = 0: K_GP(0,0) = σ0² K_L with every weight at variance σ0², built here as the NNGP of a prior
    σ = σ0; and the drift phase starts where learning is at t0."""
    x, xt = points()
    prior = Prior(0.1, 1.0, 0.6)
    t_learn = record_times(20.0, 8)
    cov = predictor_covariance(x, xt, depth=2, activation="relu", prior=prior, t_learn=t_learn,
                               t0=float(t_learn[5]), t_drift=record_times(20.0, 5))
    k0 = KernelModel("relu", 2, Prior(0.1, 0.6, 0.6)).nngp(torch.cat([x, xt]), torch.cat([x, xt]))
    assert torch.allclose(cov["learn"].var_train[0], k0.diagonal()[:5], atol=1e-4, rtol=0)
    assert torch.allclose(cov["learn"].cov_test[0], k0[5:, 5:], atol=1e-4, rtol=0)
    assert torch.allclose(cov["drift"].var_train[0], cov["learn"].var_train[5], atol=1e-10, rtol=0)
    assert torch.allclose(cov["drift"].cov_test[0], cov["learn"].cov_test[5], atol=1e-10, rtol=0)
    assert (cov["learn"].var_train[1:] != cov["learn"].var_train[0]).all()  # and it moves


@pytest.mark.parametrize("act,depth,s0", [("erf", 2, 0.8), ("linear", 1, 0.7), ("relu", 1, 1.0)])
def test_gradient_phase_is_the_ntk_ensemble_covariance(act, depth, s0):
    """T → 0 (Lee et al. 2019): f0 is frozen at its initial draw, K0 = σ0² K_L, and with Θ = K_ntk,
    δf(x,t) = f0(x) − k_Θ(x) Θ⁻¹ (I − e^(−Θt)) f0(X), so Cov_t = L K0 Lᵀ with
    L = [I | −k_Θ Θ⁻¹ (I − e^(−Θt))] (the closed form of Lee et al. written out)."""
    x, xt = points()
    prior = Prior(1e-7, 1.0, s0)
    t_learn = torch.cat([torch.zeros(1), torch.logspace(-2, 1, 10)])
    cov = predictor_covariance(x, xt, depth=depth, activation=act, prior=prior, t_learn=t_learn, tol=1e-5)
    xa = torch.cat([x, xt])
    theta = KernelModel(act, depth, prior).ntk(xa, xa)
    k0 = KernelModel(act, depth, Prior(1e-7, s0, s0)).nngp(xa, xa)
    ev, vec = torch.linalg.eigh(theta[:5, :5])
    for i, t in enumerate(t_learn):
        resp = vec @ torch.diag(-torch.expm1(-ev * t) / ev) @ vec.T  # Θ⁻¹ (I − e^(−Θt))
        lin = torch.eye(7)
        lin[:, :5] -= theta[:, :5] @ resp
        want = lin @ k0 @ lin.T
        assert torch.allclose(cov["learn"].var_train[i], want.diagonal()[:5], atol=1e-4, rtol=0), float(t)
        assert torch.allclose(cov["learn"].cov_test[i], want[5:, 5:], atol=1e-4, rtol=0), float(t)


@pytest.mark.parametrize("act,depth,s0", [("relu", 1, 1.0), ("erf", 2, 0.6), ("linear", 1, 0.7)])
def test_equilibrium_is_the_gp_posterior_covariance(act, depth, s0):
    """t ≫ 1/γ: K_gp(x,x') − k(x) (K_gp + T I)⁻¹ k(x'), the Bayesian posterior of noise variance T."""
    x, xt = points()
    prior = Prior(0.05, 1.0, s0)
    cov = predictor_covariance(x, xt, depth=depth, activation=act, prior=prior,
                               t_learn=record_times(25 / prior.gamma, 6), tol=3e-5)
    xa = torch.cat([x, xt])
    k = KernelModel(act, depth, prior).nngp(xa, xa)
    post = k - k[:, :5] @ torch.linalg.solve(k[:5, :5] + prior.T * torch.eye(5), k[:5])
    assert torch.allclose(cov["learn"].var_train[-1], post.diagonal()[:5], atol=1e-4, rtol=0)
    assert torch.allclose(cov["learn"].cov_test[-1], post[5:, 5:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("freeze,s0", [("start", 0.6), ("equilibrium", 0.6), ("equilibrium", 1.0)])
def test_long_drift_of_odd_phi_forgets_the_task(freeze, s0):
    """SPEC §6.4 for odd φ (mean kernel 0): long after the freeze the predictor is a draw of the prior with
    the frozen readout's variance, C(t0,t0) K_L^eq = (C(t0,t0)/σ²) K_gp — K_gp after a freeze at
    equilibrium, σ0²/σ² K_gp after one at t = 0 (nothing learnt, a(0) kept) — and on the way it is not.
    σ0 = σ takes the fluctuation–dissipation route (no fitted prior expansion)."""
    x, xt = points()
    prior = Prior(0.05, 1.0, s0)
    t_learn = record_times(25 / prior.gamma, 4)
    t0 = float(t_learn[-1]) if freeze == "equilibrium" else 0.0
    cov = predictor_covariance(x, xt, depth=2, activation="erf", prior=prior, t_learn=t_learn,
                               t0=t0, t_drift=record_times(40 / prior.gamma, 6))
    xa = torch.cat([x, xt])
    k = KernelModel("erf", 2, prior).nngp(xa, xa) * (1.0 if freeze == "equilibrium" else s0 ** 2)
    assert torch.allclose(cov["drift"].var_train[-1], k.diagonal()[:5], atol=1e-4, rtol=0)
    assert torch.allclose(cov["drift"].cov_test[-1], k[5:, 5:], atol=1e-4, rtol=0)
    assert (cov["drift"].cov_test[1] - k[5:, 5:]).abs().max() > 1e-2


def test_chosen_points_and_reused_discretisation_give_the_same_numbers():
    x, xt = points()
    prior = Prior(0.1, 1.0, 0.5)
    t_learn, t_drift = record_times(20.0, 6), record_times(10.0, 4)
    y = torch.tensor([1.0, -1, 1, -1, 1])
    kw = dict(depth=1, activation="relu", prior=prior, t_learn=t_learn, t0=5.0, t_drift=t_drift)
    disc = discretise(x, xt, **kw)
    solve(x, y, xt, progress=False, discretisation=disc, **kw)  # the mean leaves the discretisation as it was
    every = predictor_covariance(x, xt, **kw)
    some = predictor_covariance(x, xt, points=[3, 1], test_points=[1], discretisation=disc, **kw)
    for phase in ("learn", "drift"):
        a, b = every[phase], some[phase]
        assert torch.allclose(b.var_train[:, [1, 3]], a.var_train[:, [1, 3]], atol=1e-12, rtol=0)
        assert b.var_train[:, [0, 2, 4]].isnan().all() and b.cov_test[:, 0].isnan().all()
        assert torch.allclose(b.cov_test[:, 1, 1], a.cov_test[:, 1, 1], atol=1e-12, rtol=0)
        assert (torch.linalg.eigvalsh(a.cov_test) > -1e-8).all()  # a covariance
    with pytest.raises(ValueError, match="t_drift"):
        predictor_covariance(x, xt, depth=1, activation="relu", prior=prior, t_learn=t_learn, t0=5.0)
    with pytest.raises(ValueError, match="theory.tol"):
        predictor_covariance(x, xt, tol=0.0, **kw)


@pytest.mark.parametrize("act,s0", [("relu", 1.0), ("erf", 0.5)])
def test_truncated_drift_basis_stays_within_a_tenth_of_tol(act, s0):
    """tol sets the rank of the drift basis (and, σ0 ≠ σ, of the coefficients' u-dependence): on one
    discretisation the covariance at tol = 1e-3 lies within 1e-4 of the untruncated bases (tol = 1e-13),
    while using fewer rows."""
    x, xt = points(p=8, q=2)
    prior = Prior(0.01, 1.0, s0)
    t_end = 20 / prior.gamma
    t_learn, t_drift = record_times(t_end, 5), record_times(t_end, 30)
    disc = discretise(x, xt, depth=2, activation=act, prior=prior, t_learn=t_learn, t0=t_end, t_drift=t_drift,
                      tol=1e-3)
    kw = dict(depth=2, activation=act, prior=prior, t_learn=t_learn, t0=t_end, t_drift=t_drift, points=[0, 5],
              discretisation=disc)
    exact, cut = (predictor_covariance(x, xt, tol=tol, **kw)["drift"] for tol in (1e-13, 1e-3))
    assert torch.allclose(cut.cov_test, exact.cov_test, atol=1e-4, rtol=0)
    assert torch.allclose(cut.var_train[:, [0, 5]], exact.var_train[:, [0, 5]], atol=1e-4, rtol=0)
    assert (cut.cov_test - exact.cov_test).abs().max() > 0  # the basis was cut


# Langevin ensembles (SPEC §8): width 512, 512 independent networks, relu, σ0/σ = 0.5 (backward sweep) and
# 1 (lag route), T = 0.2 (γ = 0.2): learning over 5/γ with dt = 0.025 (the settings of the mean comparison
# in tests/sim/test_schemes.py), freeze at 0.5/γ, drift over 5/γ. Measured: sim/theory variance ratios on the test point
# 0.95–1.14, KS p ≥ 0.1 (σ0/σ = 0.5); 0.91–1.11, KS p ≥ 0.06 (σ0 = σ).
WIDTH, ENSEMBLE = 512, 512


@pytest.mark.parametrize("s0", [0.5, 1.0])
def test_langevin_ensembles_have_the_predicted_gaussian(s0):
    """At every recorded time of both phases the ensemble variance of the test predictor lies in the
    two-sided 99.9 % chi-square band of E − 1 degrees of freedom around the theory (widened by 4/N for the
    O(1/N) finite-width bias), the mean training-point variance too, and a KS test against the predicted
    Gaussian N(f̄, var) does not reject at 1 %."""
    task = synthetic_task(4, 0.75)
    prior = Prior(0.2, 1.0, s0)
    t_end, t0 = 5 / prior.gamma, 0.5 / prior.gamma  # early: with σ0 = σ/2, C(t0,t0) = 0.71 σ², far from later
    t_learn, t_drift = record_times(t_end, 12, t_first=0.05), record_times(t_end, 8, t_first=0.1)
    kw = dict(depth=1, activation="relu", prior=prior, t_learn=t_learn, t0=t0, t_drift=t_drift)
    disc = discretise(task.x_train, task.x_test, covariance=True, **kw)
    mean = solve(task.x_train, task.y_train, task.x_test, progress=False, discretisation=disc, **kw)
    cov = predictor_covariance(task.x_train, task.x_test, discretisation=disc, **kw)
    sim = simulate(task.x_train, task.y_train, task.x_test, depth=1, activation="relu", width=WIDTH,
                   prior=prior, t_learn=t_learn, t0=t0, t_drift=t_drift, dt=0.025, ensemble=ENSEMBLE,
                   seed=3, progress=False)
    dof = ENSEMBLE - 1
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], dof) / dof
    slack = 4.0 / WIDTH
    for name, f_mean in (("learn", mean.learn), ("drift", mean.drift)):
        phase, c = getattr(sim, name), cov[name]
        for i in range(len(c.t)):
            f = phase.f_test[i, :, 0].double()
            want = float(c.cov_test[i, 0, 0])
            ratio = float(f.var()) / want
            assert lo - slack < ratio < hi + slack, (name, float(c.t[i]), ratio)
            # training points: the mean of their variances, no noisier than one point's
            pooled = float(phase.f_train[i].double().var(0).mean()) / float(c.var_train[i].mean())
            assert lo - slack < pooled < hi + slack, (name, float(c.t[i]), pooled)
            z = ((f - f_mean.f_test[i, 0]) / math.sqrt(want)).numpy()
            assert stats.kstest(z, "norm").pvalue > 0.01, (name, float(c.t[i]))


def test_network_accuracy_is_the_gaussian_overlap():
    """Two classes at ±m with one spread sd: the best threshold is 0 and the accuracy Φ(m/sd); no
    spread: the mean predictor's sign; a NaN variance leaves its example out."""
    y = np.array([1.0, -1.0] * 3)
    mean = np.outer([0.5, 0.2, 0.0], y)
    acc = network_accuracy(mean, np.full((3, 6), 0.25), y)
    assert np.allclose(acc, stats.norm.cdf([1.0, 0.4, 0.0]) * [1, 1, 0] + [0, 0, 0.5], atol=2e-3)
    assert network_accuracy(np.array([[0.3, 0.1, 2.0]]), np.array([[0.0, 0.0, np.nan]]), np.array([1.0, -1, -1]))[0] == 1


def test_covariance_round_trips_through_the_run_file(tmp_path):
    """/theory/<phase>/var_train [n,P], cov_test [n,Q,Q] and /decode/theory/<phase>/accuracy_network [n]
    are written, read back and validated (mismatched shapes are refused)."""
    task = synthetic_task(4, 0.75)
    prior = Prior(0.2, 1.0, 0.5)
    t_learn, t_drift = record_times(10.0, 4), record_times(5.0, 3)
    kw = dict(depth=1, activation="relu", prior=prior, t_learn=t_learn, t0=5.0, t_drift=t_drift)
    disc = discretise(task.x_train, task.x_test, **kw)
    theory = solve(task.x_train, task.y_train, task.x_test, progress=False, discretisation=disc, **kw)
    cov = predictor_covariance(task.x_train, task.x_test, discretisation=disc, **kw)
    for name, phase in cov.items():
        getattr(theory, name).var_train, getattr(theory, name).cov_test = phase.var_train, phase.cov_test
    y = task.y_train.numpy()
    decoding = {("theory", p): d for p, d in decode_theory(theory, y, cv_folds=2, bins=5).items()}
    cfg = OmegaConf.structured(DriftsimConfig)
    cfg.protocol.t0 = 5.0
    path = write_run(tmp_path / "run.h5", config=OmegaConf.to_yaml(cfg, resolve=True), seed=0, task=task,
                     theory=theory, decoding=decoding)
    back = read_run(path)
    for name, n in (("learn", 5), ("drift", 4)):
        assert np.allclose(back[f"/theory/{name}/var_train"], cov[name].var_train.numpy())
        assert back[f"/theory/{name}/cov_test"].shape == (n, 1, 1)
        acc = back[f"/decode/theory/{name}/accuracy_network"]
        assert acc.shape == (n,) and ((acc >= 0.5) & (acc <= 1)).all()
    with h5py.File(path, "r+") as h5:
        del h5["theory/drift/cov_test"]
        h5["theory/drift/cov_test"] = np.zeros((4, 2, 2))
    with pytest.raises(StoreError, match="covariance"):
        read_run(path)


@pytest.mark.parametrize("act,s0", [("relu", 1.0), ("erf", 1.0), ("relu", 0.6)])
def test_kgp_expansion_reproduces_the_prior_covariance(act, s0):
    """K_GP(t,s) = ρ A(ρ,u) from the expansion fitted with the NDK's (one kernel evaluation) against
    model.prior_cov at pairs of times; with σ0 = σ also (T/μ_k) × the NDK's coefficients, the
    fluctuation–dissipation route of the covariance sweep."""
    x, _ = points()
    prior = Prior(0.05, 1.0, s0)
    model = KernelModel(act, 2, prior)
    ndk, fitted = expand(model, x, x, t_span=25 / prior.gamma, tau_min=1e-3, parts=("ndk", "kgp"))
    alone, = expand(model, x, x, t_span=25 / prior.gamma, tau_min=1e-3, parts=("kgp",))
    assert torch.allclose(fitted.coef, alone.coef, atol=1e-12, rtol=0)
    s = torch.tensor([0.0, 0.3, 4.0, 60.0, 400.0])
    tau = torch.tensor([0.0, 1e-3, 0.05, 1.0, 30.0, 300.0])
    t, s_ = (s[:, None] + tau[None, :]).flatten(), s[:, None].expand(-1, tau.shape[0]).flatten()
    want = model.prior_cov(t, s_, x, x)
    rho = torch.exp(-prior.gamma * (t - s_))
    u_basis = fitted.basis_u(torch.exp(-2 * prior.gamma * s_))  # [n, M]
    lam = rho[:, None] ** fitted.alpha[None, :]  # [n, K]
    coefs = [fitted.coef]
    if s0 == 1.0:
        coefs.append(prior.T * ndk.coef / ((ndk.alpha + 1) * prior.gamma)[:, None, None, None])
    for coef in coefs:
        got = rho[:, None, None] * torch.einsum("nk,nm,kmpq->npq", lam, u_basis, coef)
        assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_kgp_fitted_in_the_discretisation_gives_the_same_covariance():
    """σ0 ≠ σ: K_GP's expansion fitted alongside the NDK's (discretise(covariance=True)), fitted by the
    covariance itself, and the whole discretisation recomputed agree (the fits share their samples)."""
    x, xt = points(q=3)
    prior = Prior(0.1, 1.0, 0.5)
    kw = dict(depth=1, activation="relu", prior=prior, t_learn=record_times(20.0, 6), t0=5.0,
              t_drift=record_times(10.0, 4))
    with_kgp = discretise(x, xt, covariance=True, **kw)
    without = discretise(x, xt, **kw)
    assert with_kgp.kgp is not None and without.kgp is None
    covs = [predictor_covariance(x, xt, test_points=[2, 0], discretisation=d, **kw)
            for d in (with_kgp, without, None)]
    for phase in ("learn", "drift"):
        for other in covs[1:]:
            assert torch.allclose(other[phase].cov_test.nan_to_num(), covs[0][phase].cov_test.nan_to_num(),
                                  atol=1e-10, rtol=0)


@pytest.mark.parametrize("z", [1e-7, 0.3, 0.999, 1.001, 4.0, 40.0])
def test_pair_weights_are_the_double_integrals(z):
    """exponential_pair_weights against adaptive quadrature of ∫_0^h φ_a(x) ∫_0^x e^(−μ(x−y)) φ_b(y) dy dx."""
    h = 0.7
    mu = z / h
    got = exponential_pair_weights(torch.tensor(mu), torch.tensor(h))
    hat = (lambda x: 1 - x / h, lambda x: x / h)
    for a in range(2):
        for b in range(2):
            want, _ = integrate.dblquad(lambda y, x: hat[a](x) * math.exp(-mu * (x - y)) * hat[b](y),
                                        0, h, 0, lambda x: x, epsabs=1e-14, epsrel=1e-12)
            assert float(got[a, b]) == pytest.approx(want, rel=1e-10, abs=1e-15)


def test_pair_weights_for_fast_rates_are_the_laplace_asymptotics():
    """μh ≫ 1: ∫_0^1 w^i e^(−zw) dw = i!/z^(i+1) up to e^(−z), so each weight is a finite sum in 1/z."""
    h, z = 2.0, torch.tensor([50.0, 1e3, 1e7])
    got = exponential_pair_weights(z / h, torch.tensor(h))
    poly = {(0, 0): [1 / 3, -1 / 2, 0, 1 / 6], (0, 1): [1 / 6, -1 / 2, 1 / 2, -1 / 6],
            (1, 0): [1 / 6, 1 / 2, -1 / 2, -1 / 6], (1, 1): [1 / 3, -1 / 2, 0, 1 / 6]}
    for (a, b), c in poly.items():
        want = h * h * sum(ci * math.factorial(i) / z ** (i + 1) for i, ci in enumerate(c))
        assert torch.allclose(got[:, a, b], want, rtol=1e-12, atol=0)


def stationary_problem():
    x, xt = points(q=3)
    t_end = 20 / 0.05
    kw = dict(depth=2, activation="relu", t_learn=record_times(t_end, 8), t0=t_end / 2,
              t_drift=record_times(t_end, 6), points=[0, 3])
    return x, xt, kw


def test_lag_route_agrees_with_the_time_sweep():
    """σ0 = σ runs the rows in lag (_lag_sweep, exact against the prior on its own coarse grid); a prior a
    hair away from σ0 = σ takes the general backward sweep on the mean's grid with K_GP fitted: two
    independent discretisations of SPEC §10, within tol."""
    x, xt, kw = stationary_problem()
    lag, time_sweep = (predictor_covariance(x, xt, prior=Prior(0.05, 1.0, s0), **kw) for s0 in (1.0, 1.0 - 1e-12))
    for phase in ("learn", "drift"):
        for field in ("var_train", "cov_test"):
            a, b = getattr(lag[phase], field), getattr(time_sweep[phase], field)
            assert torch.allclose(a.nan_to_num(), b.nan_to_num(), atol=1e-4, rtol=0)
    assert (lag["drift"].cov_test - time_sweep["drift"].cov_test).abs().max() > 0


def test_lag_route_neither_fast_rates_nor_coarse_grid_cost_accuracy(monkeypatch):
    """The two shortcuts of the lag route: dropping the memory of rates that forget within a step (all
    rates tracked with _FAST = 0: within 1e-10), and the coarse lag grid (growth and cap at tol itself:
    within tol/10)."""
    x, xt, kw = stationary_problem()
    prior = Prior(0.05, 1.0, 1.0)
    base = predictor_covariance(x, xt, prior=prior, **kw)
    monkeypatch.setattr(covariance, "_FAST", 0.0)
    tracked = predictor_covariance(x, xt, prior=prior, **kw)
    monkeypatch.undo()
    monkeypatch.setattr(discretisation, "LAG_GROWTH_TOL", 1.0)
    monkeypatch.setattr(discretisation, "LAG_MAX_TOL", 1.0)
    fine = predictor_covariance(x, xt, prior=prior, **kw)
    for phase in ("learn", "drift"):
        for other, atol in ((tracked, 1e-10), (fine, 1e-5)):
            assert torch.allclose(other[phase].cov_test, base[phase].cov_test, atol=atol, rtol=0)
            assert torch.allclose(other[phase].var_train[:, [0, 3]], base[phase].var_train[:, [0, 3]],
                                  atol=atol, rtol=0)
