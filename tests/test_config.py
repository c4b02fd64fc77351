"""Configs (DESIGN.md "Config keys", driftsim.config, driftsim/conf): the default and every preset compose
and validate; wrong keys and values fail before any work, naming the key and what is allowed."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import driftsim.app  # noqa: F401  (registers the schemas and the driftsim.t_end resolver)
from driftsim.config import DriftsimConfig, ImagePairTaskConfig, SyntheticTaskConfig, equilibrium_time

EXPERIMENTS = sorted(p.stem for p in (Path(driftsim.app.__file__).parent / "conf" / "experiment").glob("*.yaml"))


def validated(*overrides: str) -> DriftsimConfig:
    with initialize_config_module("driftsim.conf", version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def test_default_is_the_embedded_mnist_pair_with_a_drift_phase():
    conf = validated()
    assert conf.mode == "theory" and isinstance(conf.task, ImagePairTaskConfig)
    assert (conf.task.name, conf.task.classes, conf.task.n_per_class, conf.task.root) == ("mnist", [0, 1], 50, None)
    # the readout freezes at the end of learning, 25 σ²/T, whatever T, σ and t_max are
    assert conf.protocol.t0 == conf.dynamics.t_end == equilibrium_time(1e-3, 1.0) == 25_000
    assert conf.t_drift == 25_000
    assert validated("dynamics.T=0.01", "dynamics.sigma=2").protocol.t0 == pytest.approx(10_000)
    assert validated("dynamics.t_max=300").protocol.t0 == 300
    assert validated("protocol.t0=null").t_drift is None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_validates(experiment):
    conf = validated(f"experiment={experiment}")
    assert isinstance(conf.task, (SyntheticTaskConfig, ImagePairTaskConfig))


def test_presets_exist_for_the_papers_settings():
    assert {"debug", "synthetic_timescales", "synthetic_sigma", "mnist_drift", "cifar_drift"} <= set(EXPERIMENTS)
    assert isinstance(validated("experiment=debug").task, SyntheticTaskConfig)


def test_dynamics_presets_are_the_papers_and_a_fast_one():
    paper, fast = validated("dynamics=paper"), validated("dynamics=fast")
    assert validated().dynamics == paper.dynamics  # the default
    assert (paper.dynamics.T, paper.dynamics.sigma, paper.dynamics.sigma0) == (1e-3, 1.0, 1.0)
    assert (fast.dynamics.T, fast.dynamics.dt, fast.dynamics.gamma) == (0.2, 0.1, 0.2)
    assert fast.protocol.t0 == fast.t_drift == equilibrium_time(0.2, 1.0) == 125
    assert validated("dynamics=fast", "dynamics.T=0.5").dynamics.T == 0.5  # a key still overrides the preset


@pytest.mark.parametrize("task", ["synthetic", "digits", "mnist", "cifar10"])
def test_debug_preset_composes_with_any_task_and_keeps_its_size(task):
    conf = validated("debug=fast", f"task={task}")
    assert conf.task == validated(f"task={task}").task
    assert conf.dynamics == validated("dynamics=fast").dynamics
    assert (conf.record.n_times, conf.theory.tol, conf.sim.ensemble, conf.model.width) == (8, 1e-3, 8, 64)


def test_experiment_debug_is_the_debug_preset_on_the_synthetic_task(compose_config):
    def resolved(*overrides):
        return OmegaConf.to_yaml(compose_config(*overrides), resolve=True)
    assert resolved("experiment=debug") == resolved("debug=fast", "task=synthetic")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_preset_shrinks_every_experiment(experiment):
    conf, full = validated(f"experiment={experiment}", "debug=fast"), validated(f"experiment={experiment}")
    assert conf.dynamics.T == 0.2 and conf.record.n_times == 8 and conf.task == full.task


@pytest.mark.parametrize("override,key,allowed", [
    ("model.activation=foo", "model.activation='foo'", "one of \\['erf', 'gelu', 'linear', 'relu'"),
    ("dynamics.T=-1", "dynamics.T=-1.0", "a positive finite number"),
    ("dynamics.sigma0=0", "dynamics.sigma0=0.0", "a positive finite number"),
    ("model.depth=0", "model.depth=0", "an integer in \\[1, 100\\]"),
    ("mode=fast", "mode='fast'", "one of \\['theory', 'sim', 'both'\\]"),
    ("task.normalize=max", "task.normalize='max'", "one of \\['global', 'per_example', 'none'\\]"),
    ("protocol.t0=1e9", "protocol.t0=1000000000.0", "within the learning run"),
    ("protocol.freeze=none", "protocol.freeze='none'", "unless mode=sim"),
    ("decode.cv_folds=1", "decode.cv_folds=1", "an integer >= 2"),
    ("observe.sessions=1", "observe.sessions=1", "0 \\(off\\) or an integer >= 2"),
    ("observe.noise=laplace", "observe.noise='laplace'", "one of \\['none', 'gaussian', 'poisson'\\]"),
    ("observe.turnover=2", "observe.turnover=2.0", "a fraction in \\[0, 1\\]"),
])
def test_bad_values_name_the_key_and_what_is_allowed(override, key, allowed):
    with pytest.raises(ValueError, match=f"{key}.*{allowed}"):
        validated(override)


@pytest.mark.parametrize("override,match", [
    ("model.foo=1", "model.foo"),
    ("dynamics.T=abc", "dynamics.T"),
    ("task=imagenet", "(?s)task/imagenet.*Available options.*synthetic"),
])
def test_unknown_keys_types_and_groups_fail_at_composition(override, match):
    with pytest.raises(ConfigCompositionException, match=match):
        validated(override)


@pytest.mark.parametrize("override,message", [
    ("model.activation=foo", "model.activation='foo' is not allowed: one of"),
    ("dynamics.T=-1", "dynamics.T=-1.0 is not allowed: a positive finite number"),
    ("model.foo=1", "Could not override 'model.foo'"),
])
def test_command_line_fails_fast_with_one_clear_line(tmp_path, override, message):
    start = time.perf_counter()
    proc = subprocess.run(["driftsim", override], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.h5"))  # no work done
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("overrides,key,allowed", [
    (["mode=sim", "observe.sessions=3", "observe.cells=600"], "observe.cells=600", "at most model.width=512"),
    (["mode=both", "observe.sessions=3", "observe.cells=400", "observe.turnover=0.5"], "observe.cells=400",
     "uses 800 distinct units"),
    (["mode=sim", "observe.sessions=3", "observe.networks=65"], "observe.networks=65", "at most sim.ensemble=64"),
    (["observe.sessions=3", "observe.layer=2"], "observe.layer=2", "1..model.depth=1"),
    (["observe.sessions=3", "protocol.t0=null"], "observe.sessions=3", "unless protocol.t0 is set"),
    (["observe.sessions=3", "model.activation=erf"], "observe.baseline=0.0", "odd φ"),
])
def test_observe_keys_that_contradict_the_model_name_it(overrides, key, allowed):
    with pytest.raises(ValueError, match=f"{key}.*{allowed}"):
        validated(*overrides)


def test_sim_chunk_defaults_to_1024_and_keeps_antithetic_pairs_together():
    assert validated().sim.chunk == 1024
    assert validated("sim.ensemble=6", "sim.antithetic=true", "sim.chunk=4").sim.chunk == 4
    with pytest.raises(ValueError, match=r"sim.chunk=0 is not allowed: an integer >= 1"):
        validated("sim.chunk=0")
    with pytest.raises(ValueError, match=r"sim.chunk=3 is not allowed: an even number when sim.antithetic=true"):
        validated("sim.antithetic=true", "sim.chunk=3")


def test_observe_is_off_by_default_and_theory_mode_needs_no_width():
    assert validated().observe.sessions == 0
    assert validated("observe.sessions=3", "observe.cells=5000").observe.cells == 5000  # units sampled, not simulated
