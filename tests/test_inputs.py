"""Reliability of a user's inputs: every value that would break, overflow or outgrow the computation is refused
before any work with one message naming the key, the value and what is allowed; unknown keys, even added with
Hydra's ``+``, are refused naming the closest valid key; numerical failures inside are reported with the keys
that led there."""
from __future__ import annotations

import re
import time

import pytest
import torch
from hydra import compose, initialize_config_module

import driftsim.app  # noqa: F401  (registers the schemas and the driftsim.t_end resolver)
from driftsim.config import DriftsimConfig, validate
from driftsim.prior import Prior
from driftsim.sim.simulate import simulate
from driftsim.tasks import synthetic_task
from driftsim.times import record_times
from driftsim.validation import (SCALE_RANGE, NumericalError, check_finite, check_proximity, check_scales,
                                 numerical_failures)


def validated(*overrides: str) -> DriftsimConfig:
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        return validate(compose("config", overrides=["experiment=debug", *overrides]))


@pytest.mark.parametrize("override,message", [
    ("+foo=1", r"unknown config key 'foo': no known key is close to it\. The keys are \['task', 'model'"),
    ("+dynamics.temperature=0.5", r"unknown config key 'dynamics.temperature'.*The keys of dynamics are \['T'"),
    ("+model.widths=8", r"unknown config key 'model.widths': did you mean 'model.width'\?"),
    ("+task.roots=/data/mnist", r"'task.roots': no known key is close to it\. The keys of task are \['name', 'n_"),
    ("+sim.ensembel=4", r"unknown config key 'sim.ensembel': did you mean 'sim.ensemble'\?"),
])
def test_unknown_keys_added_with_plus_are_refused_naming_the_closest(override, message):
    with pytest.raises(ValueError, match=message):
        validated(override)


def test_unknown_key_of_an_image_task_names_its_own_keys():
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        with pytest.raises(ValueError, match=r"'task.roots': did you mean 'task.root'\?"):
            validate(compose("config", overrides=["+task.roots=/data/mnist"]))


@pytest.mark.parametrize("overrides,message", [
    # overflow or underflow of the prior's scales: the allowed range follows from SCALE_RANGE and the depth
    (["dynamics.sigma=1e200"], r"dynamics.sigma=1e\+200 is not allowed: a number in \[1e-25, 1e\+25\]"),
    (["dynamics.sigma=1e-200"], r"dynamics.sigma=1e-200 is not allowed: a number in \[1e-25, 1e\+25\]"),
    (["dynamics.T=1e-320"], r"dynamics.T=1e-320 is not allowed: a number in \[1e-100, 1e\+100\].*γ = T/σ²"),
    (["dynamics.sigma0=1e150"], r"dynamics.sigma0=1e\+150 is not allowed: a number in \[1e-50, 1e\+50\]"),
    (["dynamics.sigma0=1e-30", "model.depth=11"], r"dynamics.sigma0=1e-30 .*\[2.85e-05, 3.51e\+04\].*depth = 11"),
    (["dynamics.sigma=1e20", "model.depth=3"], r"dynamics.sigma=1e\+20 .*\[3.16e-13, 3.16e\+12\]"),
    (["model.depth=1000000"], r"model.depth=1000000 is not allowed: an integer in \[1, 100\]"),
    (["seed=-1"], r"seed=-1 is not allowed: an integer in \[0, 2\*\*63\)"),
    (["seed=100000000000000000000"], r"seed=100000000000000000000 is not allowed: an integer in \[0, 2\*\*63\)"),
    (["dynamics.scheme=mpl", "dynamics.lam=0.001"], r"dynamics.lam=0.001 is not allowed: a number > 0.2 \(γ"),
    (["mode=both", "sim.activity_units=100", "model.width=8"], r"sim.activity_units=100 .*\[0, model.width=8\]"),
    (["protocol.t0=null", "protocol.t_drift=50"], r"protocol.t_drift=50.0 is not allowed: unset when protocol.t0 is unset"),
    (["dynamics.t_max=1e-20"], r"dynamics.t_max=1e-20 is not allowed: unset or a time >= 0.0001"),
    (["dynamics.t_max=inf"], r"dynamics.t_max=inf is not allowed: a positive finite number"),
])
def test_values_outside_their_physical_range_are_refused_before_any_work(overrides, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        validated(*overrides)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("overrides", [["seed=9223372036854775807"], ["dynamics.sigma=1e24"], ["dynamics.t_max=1e-4"],
                                       ["dynamics.scheme=mpl", "dynamics.lam=0.3"], ["model.depth=100"]])
def test_values_at_the_edge_of_their_range_are_accepted(overrides):
    validated(*overrides)


def test_scale_bounds_are_the_powers_that_reach_the_range():
    lo, hi = SCALE_RANGE
    for depth in (1, 2, 5, 11):
        top = hi ** (1 / (2 * (depth + 1)))  # σ^(2(L+1)) = hi exactly at the bound
        check_scales(1e-3, top * (1 - 1e-9), 1.0, depth)
        with pytest.raises(ValueError, match="dynamics.sigma="):
            check_scales(1e-3, top * (1 + 1e-9), 1.0, depth)
        bottom = lo ** (1 / (2 * depth))
        check_scales(1e-3, 1.0, bottom * (1 + 1e-9), depth)
        with pytest.raises(ValueError, match="dynamics.sigma0="):
            check_scales(1e-3, 1.0, bottom * (1 - 1e-9), depth)


def test_proximity_must_exceed_the_fastest_rate():
    assert check_proximity(5.0, gamma=0.1, lam_max=4.0) == 5.0
    with pytest.raises(ValueError, match=r"dynamics.lam=3.0 .*> 4 \(the largest NTK eigenvalue"):
        check_proximity(3.0, gamma=0.1, lam_max=4.0)
    with pytest.raises(ValueError, match=r"dynamics.lam=0.05 .*> 0.1 \(γ"):
        check_proximity(0.05, gamma=0.1)


def test_simulate_refuses_a_proximity_weaker_than_the_ntk_before_stepping():
    task = synthetic_task(n_train=4)
    t = record_times(1.0, 3)
    prior = Prior(T=0.1, sigma=1.0, sigma0=1.0)
    # λ_max(K_ntk) of the synthetic task at depth 1 is about 1 (orthonormal inputs): λ = 0.5 > γ but below it
    with pytest.raises(ValueError, match=r"dynamics.lam=0.5 is not allowed: .*largest NTK eigenvalue"):
        simulate(task.x_train, task.y_train, task.x_test, depth=1, activation="relu", width=16, prior=prior,
                 t_learn=t, scheme="mpl", lam=0.5, ensemble=2, progress=False)


def test_non_finite_results_and_failed_factorisations_name_the_keys():
    keys = "dynamics.sigma0=1000, model.depth=4"
    with pytest.raises(NumericalError, match=r"the NTK is not finite \(NaN or inf\) for dynamics.sigma0=1000, "):
        check_finite("the NTK", torch.tensor([1.0, float("nan")]), keys)
    assert check_finite("the NTK", torch.ones(2), keys).shape == (2,)
    with pytest.raises(NumericalError, match=r"LinAlgError.*for dynamics.sigma0=1000, model.depth=4"):
        with numerical_failures(keys):
            torch.linalg.cholesky(-torch.eye(2, dtype=torch.float64))
    with pytest.raises(NumericalError, match=r"OverflowError.*model.depth=4"):
        with numerical_failures(keys):
            1e300 ** 2


@pytest.mark.parametrize("overrides,message", [
    (["mode=sim", "dynamics.dt=1e-9"], r"1.25e\+11 simulation steps .*dynamics.dt=1e-09.*raise limits.max_steps"),
    (["mode=sim", "dynamics.t_max=1e12"], r"1e\+13 simulation steps .*more than limits.max_steps=1e\+09"),
    (["dynamics.t_max=1e12"], r"theory grid points .*dynamics.t_max=1e\+12.*raise limits.max_grid"),
    (["record.n_times=100000000"], r"theory grid points .*record.n_times=100000000.*limits.max_grid"),
    (["mode=sim", "model.width=1000000000000"], r"GB of memory .*model.width=1000000000000.*limits.max_memory_gb"),
    (["mode=sim", "sim.ensemble=1000000000000"], r"GB of memory .*sim.ensemble=1000000000000"),
    (["task.n_train=1000000"], r"GB of memory for P \+ Q = 1000001 points.*raise limits.max_memory_gb"),
    (["task=mnist", "task.n_per_class=1000000"], r"P \+ Q = 2000100 points \(task.n_per_class=1000000, task.n_test=100\)"),
    (["mode=sim", "limits.max_steps=100"], r"1\.2\d*e\+03 simulation steps .*limits.max_steps=100"),
    (["limits.max_memory_gb=1e-6"], r"GB of memory .*more than limits.max_memory_gb=1e-06"),
    (["limits.max_grid=10"], r"theory grid points .*more than limits.max_grid=10:"),
    # the gradient phase 1e28 times faster than the diffusion: refused before the theory's expansion
    (["dynamics.sigma0=1000", "model.depth=4", "dynamics.T=1e-3"],
     r"gradient phase is \S+e\+2\d times faster .*allowed at most 1e\+14.*dynamics.sigma0=1000, model.depth=4"),
])
def test_runs_that_cannot_finish_or_fit_are_refused_with_their_estimate(run_driftsim, tmp_path, overrides, message):
    out = tmp_path / "run.h5"
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        run_driftsim("experiment=debug", *overrides, f"out={out}")
    assert time.perf_counter() - start < 10
    assert not out.exists()


@pytest.mark.parametrize("antithetic", [False, True])
def test_a_simulation_over_the_memory_budget_names_the_largest_chunk_that_fits(antithetic):
    """Its weights dominate: the refusal names the largest sim.chunk within limits.max_memory_gb (even with
    antithetic pairs), and that chunk passes the check while the next one is refused."""
    from driftsim.cost import check_estimate, estimate

    def check(chunk: int) -> None:
        conf = validated("mode=sim", "sim.ensemble=4096", "model.width=4096", "model.depth=3", f"sim.chunk={chunk}",
                         f"sim.antithetic={antithetic}", "limits.max_memory_gb=4")
        check_estimate(conf, estimate(conf))
    with pytest.raises(ValueError, match=r"sim.chunk=(\d+) \(networks simulated at once\) would fit") as refused:
        check(1024)
    fits = int(re.search(r"sim.chunk=(\d+) \(networks", str(refused.value)).group(1))
    assert fits >= 2 and fits % 2 == 0 if antithetic else fits >= 1
    check(fits)
    with pytest.raises(ValueError, match=rf"sim.chunk={fits} \(networks simulated at once\) would fit"):
        check(fits + (2 if antithetic else 1))


@pytest.mark.parametrize("key,value", [("max_steps", 0), ("max_grid", -1), ("max_memory_gb", "nan")])
def test_limits_are_positive_numbers(key, value):
    with pytest.raises(ValueError, match=f"limits.{key}=.* is not allowed: a positive finite number"):
        validated(f"limits.{key}={value}")


def test_grid_estimate_is_the_graded_grid_count():
    from driftsim.cost import grid_points
    from driftsim.theory.volterra import graded_grid
    for t_end, h_first, h_max, growth in ((100.0, 1e-3, 0.5, 0.1), (5.0, 1e-2, 1.0, 0.3), (1e3, 2.0, 1.0, 0.1)):
        built = graded_grid(t_end, h_first=h_first, h_max=h_max, growth=growth).numel() - 1
        assert abs(grid_points(t_end, h_first, h_max, growth) - built) <= 0.02 * built + 2


def test_memory_estimate_holds_one_chunk_of_networks_and_one_time_of_the_ensembles_records():
    from driftsim.cost import estimate

    def memory(chunk: int) -> float:
        return estimate(validated("mode=sim", "sim.ensemble=5000", "model.width=512", f"sim.chunk={chunk}")).memory_gb
    weights = 5 * 512 + 512  # N0 = P + 1 = 5 inputs, depth 1, the readout
    per_network = 4 * (4 * weights + 2 * 5 * 512) / 1e9  # float32: 4 copies of the weights, activations on X = 5
    assert memory(1000) == pytest.approx(memory(5000) - 4000 * per_network)
    assert memory(5000) == memory(10_000)  # E <= chunk: the ensemble at once
    one_time = 8.0 * 5000 * 5 * (1 + 8) / 1e9  # one time of f and of 8 units, every network, in float64
    records = 2 * 9 * one_time  # both phases' 8 + 1 times: streamed to disk, not held
    assert 3 * one_time < memory(1) < records


def test_default_memory_limit_is_a_fraction_of_the_machine(monkeypatch):
    from driftsim import cost
    from driftsim.theory import memory
    assert 0 < cost.default_memory_gb() < cost.machine_memory_gb()
    monkeypatch.setattr(memory.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert cost.machine_memory_gb() == 8.0 * 2**30 / 1e9


def test_limits_do_not_change_what_a_run_computes(run_driftsim, tmp_path):
    out = tmp_path / "run.h5"
    assert run_driftsim("experiment=debug", f"out={out}")[1]
    # a complete run of the same config is kept whatever the limits: they are not compared
    assert run_driftsim("experiment=debug", "limits.max_grid=1e8", "limits.max_memory_gb=100", f"out={out}") == (out, False)


def test_a_non_finite_covariance_names_the_keys(monkeypatch):
    from driftsim.theory import covariance
    from driftsim.theory.kernels import KernelModel
    task = synthetic_task(n_train=4)
    prior = Prior(T=0.2, sigma=1.0, sigma0=1.0)
    # a NaN where the covariance's prior part arises stands for any overflow inside
    monkeypatch.setattr(KernelModel, "prior_cov", lambda self, *a: torch.full((4, 5, 5), float("nan"),
                                                                               dtype=torch.float64))
    with pytest.raises(NumericalError, match=r"the predictor's covariance .* not finite .*dynamics.T=0.2, dynamics."
                                             r"sigma=1, dynamics.sigma0=1, model.depth=1"):
        covariance.predictor_covariance(task.x_train, task.x_test, depth=1, activation="relu", prior=prior,
                                        t_learn=record_times(5.0, 3), tol=1e-3)
