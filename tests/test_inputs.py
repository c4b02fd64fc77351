"""Reliability of a user's inputs: every value that would break, overflow or outgrow the computation is refused
before any work with one message naming the key, the value and what is allowed; unknown keys, even added with
Hydra's ``+``, are refused naming the closest valid key; numerical failures inside are reported with the keys
that led there."""
from __future__ import annotations

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
])
def test_values_outside_their_physical_range_are_refused_before_any_work(overrides, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        validated(*overrides)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("overrides", [["seed=9223372036854775807"], ["dynamics.sigma=1e24"],
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
