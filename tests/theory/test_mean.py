"""SPEC §5–6: the mean predictor against the NTK solution, the GP posterior, an independent direct
(all-pairs trapezoid) Volterra solution, grid refinement, and the frozen-readout limits."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from driftsim.theory.kernels import KernelModel
from driftsim.prior import Prior
from driftsim.theory import reference
from driftsim.theory.discretisation import discretise
from driftsim.theory.mean import solve
from driftsim.times import record_times
from driftsim.theory.reference import solve_second_kind, trapezoid_weights, weighted_sum
from driftsim.theory.volterra import graded_grid

pytestmark = pytest.mark.usefixtures("float64")


def synthetic(p=4, rho=0.75):
    """SPEC §7 synthetic task, written out here: x_μ = √N0 e_μ, test point ρ x_1 + √(1−ρ²) √N0 e_{P+1}."""
    n0 = p + 1
    x = math.sqrt(n0) * torch.eye(n0)[:p]
    y = torch.tensor([(-1.0) ** k for k in range(p)])
    xt = math.sqrt(n0) * (rho * torch.eye(n0)[0] + math.sqrt(1 - rho * rho) * torch.eye(n0)[p])
    return x, y, xt[None, :]


def norms_task():
    """Inputs of different norms (so that relu's mean kernel sees them), labels tied to the norms."""
    g = torch.Generator().manual_seed(0)
    n0 = 8
    x = torch.randn(6, n0, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(n0) * torch.tensor([1.3, 1.2, 1.4, 0.8, 0.7, 0.9])[:, None]
    y = torch.tensor([1.0, 1, 1, -1, -1, -1])
    xt = torch.randn(4, n0, generator=g)
    xt = xt / xt.norm(dim=1, keepdim=True) * math.sqrt(n0) * torch.tensor([1.3, 1.3, 0.8, 0.8])[:, None]
    return x, y, xt


def run(act="relu", depth=1, T=0.05, sigma=1.0, sigma0=1.0, task=synthetic, tol=1e-4, n=30, t0=None, **kw):
    x, y, xt = task()
    prior = Prior(T=T, sigma=sigma, sigma0=sigma0)
    t_learn = kw.pop("t_learn", record_times(25 / prior.gamma, n))
    t_drift = record_times(40 / prior.gamma, n) if t0 is not None else None
    res = solve(x, y, xt, depth=depth, activation=act, prior=prior, t_learn=t_learn, t0=t0, t_drift=t_drift,
                tol=tol, progress=False, **kw)
    return res, (x, y, xt, prior)


@pytest.mark.parametrize("act,depth,s0", [("relu", 1, 1.0), ("relu", 2, 0.5), ("erf", 2, 2.0), ("linear", 1, 0.7),
                                             ("tanh", 1, 1.0)])
def test_long_time_limit_is_gp_posterior_mean(act, depth, s0):
    res, (x, y, xt, prior) = run(act, depth, sigma0=s0)
    model = KernelModel(act, depth, prior)
    # GP posterior mean built here from the NNGP kernel with noise variance T
    k = model.nngp(torch.cat([x, xt]), x)
    post = k @ torch.linalg.solve(k[: len(x)] + prior.T * torch.eye(len(x)), y)
    assert torch.allclose(res.learn.f_train[-1], post[: len(x)], atol=1e-4, rtol=0)
    assert torch.allclose(res.learn.f_test[-1], post[len(x):], atol=1e-4, rtol=0)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_gradient_phase_follows_ntk_as_temperature_falls(act):
    """SPEC §5.2 and §9.1: in the gradient phase the predictor is the NTK solution, with a gap that
    shrinks with T (∝ √T for relu, ∝ T for erf); the gradient phase itself does not depend on T."""
    t_learn = torch.cat([torch.zeros(1), torch.logspace(-2, 1, 12)])  # t ≤ 10 ≪ 1/γ
    gaps = []
    for T in (1e-2, 1e-3, 1e-4):
        res, _ = run(act, 2, T=T, sigma0=0.8, t_learn=t_learn, tol=1e-5)
        gaps.append(max(float((res.learn.f_train - res.learn.f_ntk_train).abs().max()),
                        float((res.learn.f_test - res.learn.f_ntk_test).abs().max())))
    assert gaps[2] < 1e-2
    for a, b in zip(gaps, gaps[1:]):
        assert b < a / (2.5 if act == "relu" else 6)  # √10 ≈ 3.2 for relu, 10 for erf


def test_agrees_with_direct_all_pairs_solver():
    """The separable solver against the plain trapezoid product integration of SPEC §11, which
    evaluates K_d(t_i, t_j) directly for every pair (no expansion), on a fine grid."""
    act, depth = "erf", 2
    res, (x, y, xt, prior) = run(act, depth, T=0.1, sigma0=0.6, t_learn=record_times(30.0, 12))  # 3/γ
    model = KernelModel(act, depth, prior)
    t = graded_grid(float(res.learn.t[-1]), 2e-3, 0.1, 0.01, include=res.learn.t)

    def row(i, js):
        return reference.ndk(model, t[i].expand(len(js)), t[js], x, x)

    f = solve_second_kind(row, t, y)
    rec = torch.searchsorted(t, res.learn.t)
    assert torch.allclose(f[rec], res.learn.f_train, atol=2e-4, rtol=0)
    r = y - f
    for n, i in enumerate(rec.tolist()[1:], start=1):
        kern = lambda js: reference.ndk(model, t[i].expand(len(js)), t[js], xt, x)  # noqa: E731
        direct = weighted_sum(kern, trapezoid_weights(t, i), r[: i + 1], len(xt) * len(x))
        assert torch.allclose(direct, res.learn.f_test[n], atol=2e-4, rtol=0)


def test_refinement_converges_at_second_order_within_tol():
    """The residual is interpolated linearly (kernel integrated exactly): error ∝ h² ∝ tol. Three grids,
    tol = 1e-3, 1e-4, 1e-5 (each √10 finer: 482, 1459, 4548 points), against tol = 1e-7 (45206 points):
    the error is below tol at each (measured 4.9e-4, 5.1e-5, 6.4e-6), and the least-squares slope of
    log error against log mean step is the order, measured 1.93; asserted within [1.6, 2.4] (order 1
    would give 1)."""
    ref, _ = run("relu", 2, sigma0=0.5, tol=1e-7)
    steps, errs = [], []
    for tol in (1e-3, 1e-4, 1e-5):
        res, _ = run("relu", 2, sigma0=0.5, tol=tol)
        err = max(float((res.learn.f_test - ref.learn.f_test).abs().max()),
                  float((res.learn.f_train - ref.learn.f_train).abs().max()))
        assert err < tol
        steps.append(float(res.learn.t[-1]) / (res.grid_size - 1))
        errs.append(err)
    order = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert 1.6 < order < 2.4, order


def test_frozen_readout_matches_learning_at_t0_and_direct_quadrature():
    act, depth = "relu", 2
    prior_kw = dict(T=0.1, sigma0=0.7)
    x, y, xt = norms_task()
    prior = Prior(T=0.1, sigma=1.0, sigma0=0.7)
    t_learn = record_times(25 / prior.gamma, 20)
    t0 = float(t_learn[12])
    res, _ = run(act, depth, task=norms_task, t_learn=t_learn, t0=t0, **prior_kw)
    d = res.drift
    assert d.t[0] == 0
    assert torch.allclose(d.f_train[0], res.learn.f_train[12], atol=1e-10)
    assert torch.allclose(d.f_test[0], res.learn.f_test[12], atol=1e-10)
    # SPEC §6.2 evaluated directly with the frozen kernel on the direct solver's residual
    model = KernelModel(act, depth, prior)
    t = graded_grid(t0, 2e-3, 0.01 / prior.gamma, 0.01, include=torch.tensor([t0]))
    f = solve_second_kind(lambda i, js: reference.ndk(model, t[i].expand(len(js)), t[js], x, x), t, y)
    w, r = trapezoid_weights(t, len(t) - 1), y - f
    for k in (3, 10, 18):
        tt = t0 + float(d.t[k])
        direct = weighted_sum(lambda js: reference.frozen(model, torch.full((len(js),), tt), t[js], t0, xt, x), w, r,
                              len(xt) * len(x))
        assert torch.allclose(direct, d.f_test[k], atol=2e-3, rtol=0)


@pytest.mark.parametrize("act", ["relu", "erf", "linear"])
def test_freeze_at_equilibrium_closed_forms(act):
    """SPEC §6.3–6.4: freezing at equilibrium, f_fr(t0+τ) = σ² K_L^eq(τ) (K_gp + T I)⁻¹ Y and the
    decorrelated limit σ² K̄ (K_gp + T I)⁻¹ Y, with K̄ = 0 for odd φ; only norms survive for relu."""
    res, (x, y, xt, prior) = run(act, 2, task=norms_task, sigma=1.2, sigma0=0.6, t0=None)
    t0 = float(res.learn.t[-1])  # 25/γ
    res, _ = run(act, 2, task=norms_task, sigma=1.2, sigma0=0.6, t0=t0)
    model = KernelModel(act, 2, prior)
    xa = torch.cat([x, xt])
    alpha = torch.linalg.solve(model.nngp(x, x) + prior.T * torch.eye(len(x)), y)
    s2 = prior.sigma ** 2
    for k in (0, 15, 25):
        tau = float(res.drift.t[k])
        big = torch.tensor([200 / prior.gamma])
        k_eq = model.two_time(big + tau, big, xa, x).k[0]  # stationary two-time last-layer kernel
        pred = s2 * k_eq @ alpha
        assert torch.allclose(res.drift.f_test[k], pred[len(x):], atol=1e-4, rtol=0)
    limit = s2 * reference.mean_kernel(model, xa, x) @ alpha
    assert torch.allclose(res.drift.f_inf_test, limit[len(x):], atol=1e-4, rtol=0)
    assert torch.allclose(res.drift.f_test[-1], res.drift.f_inf_test, atol=1e-4, rtol=0)  # τ = 40/γ
    if act == "relu":
        assert res.drift.f_inf_test.abs().min() > 1e-2
        # test points 0,1 share a norm (as do 2,3) but not a direction: equal limits
        assert torch.allclose(res.drift.f_inf_test[0], res.drift.f_inf_test[1], atol=1e-10)
        assert torch.allclose(res.drift.f_inf_test[2], res.drift.f_inf_test[3], atol=1e-10)
        assert not torch.allclose(res.drift.f_inf_test[0], res.drift.f_inf_test[2], atol=1e-3)
    else:
        assert res.drift.f_inf_test.abs().max() == 0 and res.drift.f_inf_train.abs().max() == 0


def _tensors(obj, prefix=""):
    """Every tensor and number of a (nested) result dataclass, by its dotted name."""
    out = {}
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), prefix + f.name
        out.update(_tensors(value, name + ".") if dataclasses.is_dataclass(value) else {name: value})
    return out


def test_a_passed_discretisation_gives_the_same_numbers_and_must_match():
    """solve with a discretisation built by discretise (also with covariance=True, whose K_GP expansion the
    mean does not read) is solve without one, within 1e-12 (measured 1e-14: two calls of solve alone differ
    as much, by the order of threaded reductions); a discretisation of other arguments is refused, naming
    them."""
    x, y, xt = norms_task()
    prior = Prior(T=0.1, sigma=1.0, sigma0=0.7)
    kw = dict(depth=2, activation="relu", prior=prior, t_learn=record_times(25 / prior.gamma, 10), t0=50.0,
              t_drift=record_times(100.0, 6), tol=1e-3)
    plain = _tensors(solve(x, y, xt, progress=False, **kw))
    for covariance in (False, True):
        disc = discretise(x, xt, covariance=covariance, **kw)
        assert (disc.kgp is not None) == covariance
        reused = _tensors(solve(x, y, xt, progress=False, discretisation=disc, **kw))
        assert reused.keys() == plain.keys()
        for name, value in plain.items():
            other = reused[name]
            if isinstance(value, torch.Tensor):
                assert torch.allclose(other, value, atol=1e-12, rtol=0), name
            else:
                assert other == value, name
    others = [(dict(x_test=xt[:2]), "x_test"), (dict(depth=1), "depth, activation, prior"),
              (dict(prior=Prior(T=0.1, sigma=1.0, sigma0=0.6)), "depth, activation, prior"),
              (dict(t_learn=record_times(25 / prior.gamma, 9)), "t_learn"), (dict(t0=40.0), "t0"),
              (dict(t_drift=record_times(90.0, 6)), "t_drift"), (dict(tol=1e-4), "tol"),
              (dict(t0=None, t_drift=None, tol=1e-4), "t0, t_drift, tol")]
    for override, names in others:
        args = {**kw, "x_test": xt, **override}
        with pytest.raises(ValueError, match=f"discretisation was built for other {names} than given"):
            solve(x, y, args.pop("x_test"), progress=False, discretisation=disc, **args)


def test_bad_input_is_named():
    x, y, xt = synthetic()
    prior = Prior(T=0.1, sigma=1.0, sigma0=1.0)
    t = record_times(100.0, 5)
    kw = dict(depth=1, activation="relu", prior=prior, t_learn=t, progress=False)
    bad_x = x.clone()
    bad_x[0, 0] = float("nan")
    cases = [
        (dict(x_train=bad_x), r"x_train contains NaN"),
        (dict(x_test=torch.ones(1, 3)), r"x_test has input dimension 3; expected 5"),
        (dict(y_train=torch.ones(3)), r"y_train must have shape \[4\]"),
        (dict(t0=1e6, t_drift=t), r"protocol.t0=1000000.0 is outside the run"),
        (dict(t0=10.0, t_drift=torch.tensor([0.0, float("nan")])), r"t_drift must be"),
        (dict(activation="swish"), r"model.activation='swish'"),
        (dict(depth=0), r"model.depth=0"),
        (dict(t_learn=torch.tensor([0.0, 2.0, 1.0])), r"t_learn must be .*increasing"),
        (dict(tol=2.0), r"theory.tol=2.0"),
    ]
    for override, msg in cases:
        args = dict(x_train=x, y_train=y, x_test=xt, **kw)
        args.update(override)
        with pytest.raises(ValueError, match=msg):
            solve(args.pop("x_train"), args.pop("y_train"), args.pop("x_test"), **args)
        if "y_train" in override:
            continue
        args = dict(x_train=x, x_test=xt, **kw)  # the same rules for the discretisation alone
        args.update(override)
        del args["progress"]
        with pytest.raises(ValueError, match=msg):
            discretise(args.pop("x_train"), args.pop("x_test"), **args)


@pytest.mark.parametrize("sigma0", [1.0, 0.6])
def test_forgetting_fast_rates_on_repeated_steps_changes_nothing(monkeypatch, sigma0):
    """volterra.solve_separable folds the rates that forget a step (e^(−μh) < FORGET) into one matrix per
    u-node on the grid's repeated steps; carrying every running sum (FORGET = 0: only exact underflow folds)
    gives the same solution and returned sums to rounding, with one u-node (σ0 = σ) and with several."""
    from driftsim.theory import volterra

    folded, _ = run("relu", depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    monkeypatch.setattr(volterra, "FORGET", 0.0)
    carried, _ = run("relu", depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    for a, b in ((folded.learn.f_train, carried.learn.f_train), (folded.learn.f_test, carried.learn.f_test),
                 (folded.drift.f_test, carried.drift.f_test)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("act,sigma0", [("relu", 1.0), ("relu", 0.5), ("erf", 2.0)])
def test_blocks_of_repeated_steps_change_nothing(monkeypatch, act, sigma0):
    """volterra.solve_separable takes the grid's repeated steps in blocks, one pass over the slow rates'
    coefficients for the whole block (σ0 = σ: ℓ constant; σ0 ≠ σ: ℓ_m(t) on the u-nodes, and the late stretch
    with its forcing); step by step (BLOCK_MAX = 1) gives the same solution and returned sums to rounding."""
    from driftsim.theory import volterra

    blocks, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    monkeypatch.setattr(volterra, "BLOCK_MAX", 1)
    steps, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    for a, b in ((blocks.learn.f_train, steps.learn.f_train), (blocks.learn.f_test, steps.learn.f_test),
                 (blocks.drift.f_test, steps.drift.f_test)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("act,sigma0", [("relu", 0.5), ("relu", 0.1), ("erf", 2.0)])
def test_the_u_nodes_and_their_cut_keep_the_predictor(monkeypatch, act, sigma0):
    """σ0 ≠ σ: the nodes the probe picks (expansion.u_node_count at U_TOL_FRACTION·tol) and the cut of the
    coefficients in u (U_REL_FRACTION·tol) against the last level's 33 nodes uncut: within tol/20 of the scale."""
    from driftsim.theory import discretisation

    chosen, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    monkeypatch.setattr(discretisation, "u_node_count", lambda *a, **k: 33)
    monkeypatch.setattr(discretisation, "U_REL_FRACTION", 0.0)
    fine, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    for a, b in ((chosen.learn.f_train, fine.learn.f_train), (chosen.learn.f_test, fine.learn.f_test),
                 (chosen.drift.f_test, fine.drift.f_test)):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-6 * float(b.abs().max()))


@pytest.mark.parametrize("act,sigma0", [("relu", 0.5), ("erf", 2.0)])
def test_the_late_phase_on_one_kernel_keeps_the_predictor(monkeypatch, act, sigma0):
    """σ0 ≠ σ: once u = e^(−2γt) ≈ 0, volterra.solve_separable marches the late steps on the one kernel
    Σ_m ℓ_m coef[k, m], with the earlier running sums as a decaying forcing; marching every step on the
    u-nodes (LATE_ELL < 0: no late phase) gives the same solution to 1e-7 of its scale (tol/1000; measured 4e-9:
    the kernel's remaining u-dependence at ℓ within LATE_ELL of its limit)."""
    from driftsim.theory import volterra

    late, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    monkeypatch.setattr(volterra, "LATE_ELL", -1.0)
    every, _ = run(act, depth=2, t0=250.0, task=norms_task, sigma0=sigma0)
    for a, b in ((late.learn.f_train, every.learn.f_train), (late.learn.f_test, every.learn.f_test),
                 (late.drift.f_train, every.drift.f_train), (late.drift.f_test, every.drift.f_test)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7 * float(b.abs().max()))
