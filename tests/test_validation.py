"""One rule, one message: a bad value gets the same error from the config (before any work) as from the
domain function a direct caller uses (validation.py)."""
import pytest
import torch

from driftsim.config import (DriftsimConfig, DynamicsConfig, ImagePairTaskConfig, ModelConfig, ProtocolConfig,
                             SimConfig, SyntheticTaskConfig, TheoryConfig)
from driftsim.prior import Prior
from driftsim.sim.networks import init_ensemble
from driftsim.sim.simulate import simulate
from driftsim.tasks import make_task, synthetic_task
from driftsim.theory.kernels import KernelModel
from driftsim.theory.mean import solve
from driftsim.times import record_times

TASK = synthetic_task(4, 0.75)
PRIOR = Prior(0.1, 1.0, 1.0)
T_END = 25_000.0  # the default dynamics.t_end, 25 σ²/T at T = 1e-3


def _solve(**kw):
    args = {**dict(depth=1, activation="relu", prior=PRIOR, t_learn=record_times(T_END, 4), progress=False), **kw}
    return solve(TASK.x_train, TASK.y_train, TASK.x_test, **args)


def _simulate(**kw):
    args = {**dict(depth=1, activation="relu", width=4, prior=PRIOR, t_learn=record_times(T_END, 4), ensemble=2,
                   progress=False), **kw}
    return simulate(TASK.x_train, TASK.y_train, TASK.x_test, **args)


def _init(size=2, depth=1, antithetic=False):
    return init_ensemble(size, 3, 4, depth, "relu", 1.0, generator=torch.Generator(), antithetic=antithetic)


def _with_t0(t0):
    return DriftsimConfig(protocol=ProtocolConfig(t0=t0))


CASES = [  # (the config, the domain calls, a part of the message)
    (lambda: TheoryConfig(tol=2.0), [lambda: _solve(tol=2.0)], "theory.tol=2.0 is not allowed: a number in (0, 1)"),
    (lambda: ModelConfig(depth=0), [lambda: KernelModel("relu", 0, PRIOR), lambda: _init(depth=0),
                                    lambda: _solve(depth=0)], "model.depth=0 is not allowed: an integer in [1, 100]"),
    (lambda: SimConfig(ensemble=5, antithetic=True), [lambda: _init(5, antithetic=True)],
     "sim.ensemble=5 is not allowed: an even number when sim.antithetic=true"),
    (lambda: SimConfig(chunk=0), [lambda: _simulate(chunk=0)], "sim.chunk=0 is not allowed: an integer >= 1"),
    (lambda: SimConfig(chunk=3, antithetic=True), [lambda: _simulate(chunk=3, antithetic=True)],
     "sim.chunk=3 is not allowed: an even number when sim.antithetic=true"),
    (lambda: DriftsimConfig(model=ModelConfig(width=4), sim=SimConfig(activity_units=5)),
     [lambda: _simulate(activity_units=5)], "sim.activity_units=5 is not allowed: an integer in [0, model.width=4]"),
    (lambda: _with_t0(1e9), [lambda: _solve(t0=1e9, t_drift=record_times(1.0, 2)),
                             lambda: _simulate(t0=1e9, t_drift=record_times(1.0, 2))],
     "protocol.t0=1000000000.0 is outside the run"),
    (lambda: DriftsimConfig(seed=-1), [lambda: _simulate(seed=-1)], "seed=-1 is not allowed: an integer in [0, 2**63)"),
    (lambda: DynamicsConfig(T=-1.0), [lambda: Prior(-1.0, 1.0, 1.0)], "dynamics.T=-1.0 is not allowed: a positive"),
    (lambda: DynamicsConfig(scheme="heun"), [lambda: _simulate(scheme="heun")], "dynamics.scheme='heun' is not"),
    (lambda: ModelConfig(activation="swish"), [lambda: _solve(activation="swish"),
                                               lambda: _simulate(activation="swish")], "model.activation='swish'"),
    (lambda: SyntheticTaskConfig(n_train=3), [lambda: synthetic_task(3), lambda: make_task("synthetic", n_train=3)],
     "task.n_train=3 is not allowed: an even integer >= 2"),
    (lambda: ImagePairTaskConfig(n_test=3), [lambda: make_task("digits", n_test=3)], "task.n_test=3 is not allowed"),
]


@pytest.mark.parametrize("config, calls, part", CASES, ids=[c[2].split("=")[0] for c in CASES])
def test_config_and_domain_functions_give_one_message(config, calls, part):
    with pytest.raises(ValueError) as from_config:
        config()
    message = str(from_config.value)
    assert part in message
    for call in calls:
        with pytest.raises(ValueError) as from_call:
            call()
        assert str(from_call.value) == message


def test_a_drift_phase_needs_both_t0_and_its_times():
    for run in (_solve, _simulate):
        with pytest.raises(ValueError, match=r"protocol.t0=1.0 asks for a drift phase: pass its recorded times"):
            run(t0=1.0)
        with pytest.raises(ValueError, match="t_drift was given but protocol.t0 is unset"):
            run(t_drift=record_times(1.0, 2))
