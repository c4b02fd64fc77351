"""The observation model: a population's activity turned into a recording as the field makes them
(DESIGN.md "Drift metrics and recordings").

A population is the activity φ(h_l) of U units of A networks ("animals") at S sessions and X stimuli,
[S, A, U, X] — the simulator's hidden units (``SimResult.sessions``) or units drawn from the theory's
Gaussian process (``theory.population.sample_units``). A recording keeps C cells per network, R trials
per stimulus, [S, A, C, X, R]:

- cells: C units drawn at random per network for session 0 and kept; between consecutive sessions a
  fraction ``turnover`` of them (round(turnover·C) slots, chosen at random) is replaced by units never
  recorded before — the slot keeps its place in the recording, as a tracking that mistakes a new cell for
  a lost one would, so turnover lowers every between-session correlation;
- rate: gain·φ + baseline per cell and stimulus;
- trials: ``none`` repeats the rate, ``gaussian`` adds N(0, noise_sd²), ``poisson`` draws counts with the
  rate as mean (rates must be ≥ 0: φ ≥ 0 such as relu, or a baseline that lifts an odd φ above 0).

Randomness comes from a numpy Generator per network, on child a of a SeedSequence of (run seed, source)
(:func:`network_seed`): network a's recording does not depend on the other networks nor on their order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NOISES", "Recording", "cell_schedule", "network_seed", "observation_seed", "record", "record_network",
           "units_needed"]

NOISES = ("none", "gaussian", "poisson")
_SOURCES = ("theory", "sim")
_OBSERVE_KEY = 0x0B5E  # keeps the observation's streams apart from the simulator's SeedSequence(seed)
_INT32_SAFE = 1e9  # Poisson counts of rates below this fit int32 (2^31 is 36 000 standard deviations above)


def observation_seed(seed: int, source: str) -> np.random.SeedSequence:
    """The SeedSequence of the observation of ``source`` (``theory`` or ``sim``) in a run of ``seed``."""
    if source not in _SOURCES:
        raise ValueError(f"source={source!r} is not allowed: one of {list(_SOURCES)}")
    return np.random.SeedSequence([int(seed), _OBSERVE_KEY, _SOURCES.index(source)])


def _replaced(cells: int, turnover: float) -> int:
    if not 0 <= turnover <= 1:
        raise ValueError(f"observe.turnover={turnover!r} is not allowed: a fraction in [0, 1]")
    return round(turnover * cells)


def units_needed(sessions: int, cells: int, turnover: float) -> int:
    """Distinct units a recording of C = ``cells`` cells over S sessions with ``turnover`` uses:
    C + (S − 1)·round(turnover·C)."""
    return cells + (sessions - 1) * _replaced(cells, turnover)


def cell_schedule(sessions: int, units: int, cells: int, turnover: float, rng: np.random.Generator) -> np.ndarray:
    """Which unit each cell slot of one network records in each session: [S, C] indices into its U units.

    Session 0 takes C units at random; each later session replaces round(turnover·C) random slots by
    units not recorded before. Needs U ≥ :func:`units_needed`.
    """
    need = units_needed(sessions, cells, turnover)
    if cells < 2:
        raise ValueError(f"observe.cells={cells!r} is not allowed: correlations over cells need at least 2")
    if need > units:
        raise ValueError(f"observe.cells={cells} over observe.sessions={sessions} with observe.turnover={turnover} "
                         f"needs {need} distinct units per network; the population has {units}")
    k = _replaced(cells, turnover)
    out = np.empty((sessions, cells), dtype=np.int64)
    order = rng.permutation(units)[:need]
    current, fresh = order[:cells].copy(), iter(order[cells:])
    out[0] = current
    for s in range(1, sessions):
        for slot in rng.choice(cells, size=k, replace=False):
            current[slot] = next(fresh)
        out[s] = current
    return out


def network_seed(seed: np.random.SeedSequence, network: int) -> np.random.SeedSequence:
    """The SeedSequence of network ``network``'s recording: child ``network`` of ``seed`` (what
    ``seed.spawn`` would give, without its state), so that each network's recording is the same whether the
    networks are recorded together, one by one, or in parallel."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, int(network)))


@dataclass
class Recording:
    """responses [S, A, C, X, R]; cells [S, A, C]: the unit each cell slot recorded in each session (one
    network's, from :func:`record_network`: [S, C, X, R] and [S, C])."""
    responses: np.ndarray
    cells: np.ndarray


def record(population, *, cells: int, trials: int, noise: str = "poisson", gain: float = 1.0,
           baseline: float = 0.0, noise_sd: float = 1.0, turnover: float = 0.0,
           seed: np.random.SeedSequence) -> Recording:
    """Record C cells of each network of ``population`` over R trials per stimulus: network a as
    :func:`record_network` with :func:`network_seed` (seed, a).

    Parameters
    ----------
    population : array_like [S, A, U, X]
        Activity φ of U units of A networks at S sessions and X stimuli (torch or numpy).
    cells, trials, noise, gain, baseline, noise_sd, turnover :
        As in :func:`record_network`.
    seed : numpy.random.SeedSequence
        Of the cell choice and the trial noise (:func:`observation_seed`).

    Returns
    -------
    Recording
        responses [S, A, C, X, R] as :func:`record_network`'s and the cells' units [S, A, C].
    """
    pop = _numpy(population)
    if pop.ndim != 4:
        raise ValueError(f"population must be [sessions, networks, units, stimuli]; got shape {pop.shape}")
    parts = [record_network(pop[:, a], cells=cells, trials=trials, noise=noise, gain=gain, baseline=baseline,
                            noise_sd=noise_sd, turnover=turnover, seed=network_seed(seed, a))
             for a in range(pop.shape[1])]
    return Recording(np.stack([p.responses for p in parts], axis=1), np.stack([p.cells for p in parts], axis=1))


def record_network(activity, *, cells: int, trials: int, noise: str = "poisson", gain: float = 1.0,
                   baseline: float = 0.0, noise_sd: float = 1.0, turnover: float = 0.0,
                   seed: np.random.SeedSequence) -> Recording:
    """Record C cells of one network over R trials per stimulus (the module docstring's model).

    Parameters
    ----------
    activity : array_like [S, U, X]
        Activity φ of the network's U units at S sessions and X stimuli (torch or numpy).
    cells : int
        C ≥ 2 cells.
    trials : int
        R ≥ 1 trials per stimulus.
    noise : {"none", "gaussian", "poisson"}
        Trial noise around the rate gain·φ + baseline.
    gain, baseline : float
        The rate's scale (> 0) and offset.
    noise_sd : float
        Standard deviation of the Gaussian trial noise (> 0).
    turnover : float
        Fraction of cells replaced between consecutive sessions, in [0, 1].
    seed : numpy.random.SeedSequence
        Of the cell choice and the trial noise (:func:`network_seed`).

    Returns
    -------
    Recording
        responses [S, C, X, R], float64 (Poisson: int32 counts, the run file's dtype; float64 for rates of 10⁹
        and above), and the cells' units [S, C].
    """
    act = _numpy(activity)
    if act.ndim != 3:
        raise ValueError(f"a network's activity must be [sessions, units, stimuli]; got shape {act.shape}")
    if not np.isfinite(act).all():
        raise ValueError("population activity contains NaN or inf: nothing can be recorded from it")
    if noise not in NOISES:
        raise ValueError(f"observe.noise={noise!r} is not allowed: one of {list(NOISES)}")
    if not (isinstance(trials, (int, np.integer)) and trials >= 1):
        raise ValueError(f"observe.trials={trials!r} is not allowed: an integer >= 1")
    for key, value in (("observe.gain", gain), ("observe.noise_sd", noise_sd)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{key}={value!r} is not allowed: a positive finite number")
    S, U, _ = act.shape
    rng = np.random.default_rng(seed)
    idx = cell_schedule(S, U, cells, turnover, rng)
    rate = gain * np.take_along_axis(act.astype(np.float64, copy=False), idx[..., None], axis=1) + baseline
    shape = (*rate.shape, trials)  # [S, C, X, R]
    rate = rate[..., None]  # broadcast over trials: drawing from a repeated rate array takes twice as long
    if noise == "gaussian":
        return Recording(rate + noise_sd * rng.standard_normal(shape), idx)
    if noise == "poisson":
        low, high = float(rate.min()), float(rate.max())
        if low < 0:
            raise ValueError(f"observe.noise=poisson needs rates gain·φ + baseline >= 0, but the lowest is {low:.4g} "
                             f"(φ takes negative values, e.g. erf or linear): raise observe.baseline by at least "
                             f"{-low:.4g}, or use observe.noise=gaussian or none")
        return Recording(rng.poisson(rate, size=shape).astype(np.int32 if high < _INT32_SAFE else np.float64), idx)
    return Recording(np.broadcast_to(rate, shape).copy(), idx)


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
