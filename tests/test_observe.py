"""The observation model (driftsim/observe.py): cells, turnover, trial noise, seeds and bad input."""
import numpy as np
import pytest
import torch

from driftsim import observe as obs


def _population(S=4, A=3, U=50, X=6, seed=0):
    return np.abs(np.random.default_rng(seed).standard_normal((S, A, U, X)))


def test_cells_are_fixed_without_turnover_and_replaced_with_it():
    rng = np.random.default_rng(1)
    fixed = obs.cell_schedule(5, 40, 10, 0.0, rng)
    assert (fixed == fixed[0]).all() and len(set(fixed[0])) == 10
    moving = obs.cell_schedule(5, 40, 10, 0.3, rng)  # 3 of 10 slots per session
    for s in range(1, 5):
        changed = moving[s] != moving[s - 1]
        assert changed.sum() == 3
        assert not set(moving[s][changed]) & set(moving[:s].ravel())  # never recorded before
    assert obs.units_needed(5, 10, 0.3) == 22 == len(np.unique(moving))


def test_noise_models_have_their_statistics():
    pop = _population(S=2, A=1, U=20, X=5)
    seed = np.random.SeedSequence(3)
    none = obs.record(pop, cells=20, trials=3, noise="none", gain=2.0, baseline=0.5, seed=seed)
    rate = 2.0 * pop[:, :, none.cells[0, 0]] + 0.5
    np.testing.assert_allclose(none.responses, np.repeat(rate[..., None], 3, -1))
    g = obs.record(pop, cells=20, trials=4000, noise="gaussian", noise_sd=0.7, seed=seed).responses
    resid = g - g.mean(-1, keepdims=True)
    assert abs(resid.std() - 0.7) < 0.01
    p = obs.record(pop, cells=20, trials=4000, noise="poisson", gain=3.0, seed=seed)
    lam = 3.0 * np.take_along_axis(pop, p.cells[..., None], axis=2)
    assert (p.responses == np.round(p.responses)).all()
    # Poisson: mean = variance = rate, each estimated from 4000 trials (sd of the mean √(λ/4000))
    assert np.abs(p.responses.mean(-1) - lam).max() < 5 * np.sqrt(lam.max() / 4000)
    assert np.abs(p.responses.var(-1) / np.maximum(lam, 0.5) - 1)[lam > 0.5].mean() < 0.05


def test_seeded_and_the_same_for_torch_and_numpy():
    pop = _population()
    a = obs.record(pop, cells=8, trials=2, seed=obs.observation_seed(7, "sim"))
    b = obs.record(torch.as_tensor(pop), cells=8, trials=2, seed=obs.observation_seed(7, "sim"))
    c = obs.record(pop, cells=8, trials=2, seed=obs.observation_seed(7, "theory"))
    np.testing.assert_array_equal(a.responses, b.responses)
    assert a.responses.shape == (4, 3, 8, 6, 2) and a.cells.shape == (4, 3, 8)
    assert not np.array_equal(a.cells, c.cells)


def test_each_network_recorded_alone_is_its_slice_of_the_recording():
    pop, seed = _population(), obs.observation_seed(3, "theory")
    together = obs.record(pop, cells=8, trials=3, turnover=0.25, seed=seed)
    for a in reversed(range(pop.shape[1])):  # any order
        alone = obs.record_network(pop[:, a], cells=8, trials=3, turnover=0.25, seed=obs.network_seed(seed, a))
        np.testing.assert_array_equal(alone.responses, together.responses[:, a])
        np.testing.assert_array_equal(alone.cells, together.cells[:, a])
    assert not np.array_equal(together.responses[:, 0], together.responses[:, 1])
    assert not np.array_equal(together.cells[:, 0], together.cells[:, 1])


def test_bad_input_errors():
    pop = _population()
    seed = np.random.SeedSequence(0)
    with pytest.raises(ValueError, match="observe.noise=poisson needs rates"):
        obs.record(pop - 1.0, cells=8, trials=2, noise="poisson", seed=seed)
    with pytest.raises(ValueError, match="observe.noise='laplace'"):
        obs.record(pop, cells=8, trials=2, noise="laplace", seed=seed)
    with pytest.raises(ValueError, match="needs 62 distinct units per network; the population has 50"):
        obs.record(pop, cells=20, trials=2, turnover=0.7, seed=seed)
    with pytest.raises(ValueError, match="observe.cells=1"):
        obs.record(pop, cells=1, trials=2, seed=seed)
    with pytest.raises(ValueError, match="observe.trials=0"):
        obs.record(pop, cells=8, trials=0, seed=seed)
    with pytest.raises(ValueError, match="NaN"):
        obs.record(np.full((2, 1, 4, 3), np.nan), cells=2, trials=1, seed=seed)
    with pytest.raises(ValueError, match=r"\[sessions, networks, units, stimuli\]"):
        obs.record(pop[0], cells=2, trials=1, seed=seed)
    with pytest.raises(ValueError, match="observe.turnover=1.5"):
        obs.units_needed(3, 10, 1.5)
