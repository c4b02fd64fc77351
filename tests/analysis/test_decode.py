"""Decoding (driftsim.analysis.decode): the decoder is a scikit-learn classifier; separable classes decode at ~1,
shuffled labels at ~0.5; histograms count each class on shared edges; a fixed population decoder
loses a drifting code that a retrained one still reads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from driftsim.analysis.decode import (LinearDecoder, class_histograms, cv_accuracy, decode_sim, decode_theory, folds,
                             population_accuracy)
from driftsim.results import Equilibrium, SimPhase, SimResult, TheoryDrift, TheoryLearn, TheoryResult

P = 200
Y = np.repeat([1.0, -1.0], P // 2)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")  # array-API checks need SCIPY_ARRAY_API
def test_decoder_is_a_scikit_learn_classifier():
    rng = np.random.default_rng(0)
    check_estimator(LinearDecoder())
    dec = clone(LinearDecoder(C=0.5))
    assert dec.get_params()["C"] == 0.5 and dec.set_params(C=2.0).C == 2.0
    X = Y[:, None] + rng.normal(size=(P, 3))
    assert cross_val_score(LinearDecoder(), X, Y, cv=4).mean() > 0.8


def test_separable_classes_decode_perfectly_and_shuffled_labels_at_chance():
    rng = np.random.default_rng(0)
    splits = folds(Y, 5)
    separable = (3 * Y + rng.normal(size=P))[:, None] * 1e-9  # tiny scale: the decoder is scale-free
    assert cv_accuracy(separable, Y, splits) > 0.98
    shuffled = [cv_accuracy(separable, rng.permutation(Y), splits) for _ in range(20)]
    assert abs(np.mean(shuffled) - 0.5) < 0.05
    constant = np.zeros((P, 1))
    assert cv_accuracy(constant, Y, splits) == 0.5


def test_folds_follow_the_smallest_class():
    assert len(folds(Y, 5)) == 5
    assert len(folds(np.array([1, 1, -1, -1]), 5)) == 2
    assert folds(np.array([1, -1, 1]), 5) == []
    assert np.isnan(cv_accuracy(np.zeros((3, 1)), np.array([1, -1, 1]), []))
    for train, test in folds(Y, 5):  # stratified
        assert (Y[test] == 1).sum() == (Y[test] == -1).sum()


def test_histograms_count_each_class_on_shared_edges():
    rng = np.random.default_rng(0)
    f = np.stack([Y * s + rng.normal(size=P) for s in (0.0, 1.0, 5.0)])  # [n, P]
    counts, edges = class_histograms(f, Y, bins=12)
    assert counts.shape == (3, 2, 12) and edges.shape == (13,)
    assert (counts.sum(axis=2) == P // 2).all()
    assert edges[0] == f.min() and edges[-1] == f.max()
    # at the last time class +1 (first) sits in the upper half, class −1 in the lower
    assert counts[2, 0, 6:].sum() == P // 2 and counts[2, 1, :6].sum() == P // 2
    per_net, _ = class_histograms(np.repeat(f[:, None], 4, axis=1), Y, bins=12)  # [n, E, P]: every network
    np.testing.assert_array_equal(per_net, 4 * counts)
    _, flat = class_histograms(np.zeros((2, P)), Y, bins=4)  # a constant predictor still gets a range
    assert flat[-1] > flat[0]


def test_fixed_decoder_loses_a_drifting_code_that_a_retrained_one_reads():
    rng = np.random.default_rng(0)
    units, m = 20, 6
    angles = np.linspace(0, np.pi / 2, m)  # the class direction rotates into an orthogonal one
    basis = np.linalg.qr(rng.normal(size=(units, 2)))[0]
    direction = np.cos(angles)[:, None] * basis[:, 0] + np.sin(angles)[:, None] * basis[:, 1]  # [m, units]
    activity = 3 * Y[None, :, None] * direction[:, None, :] + rng.normal(size=(m, P, units))
    fixed, retrained = population_accuracy(activity, Y, folds(Y, 5))
    assert fixed[0] > 0.95 and retrained.min() > 0.95
    # orthogonal code: chance, up to the decoder's estimation noise along the new direction
    assert abs(fixed[-1] - 0.5) < 0.15 and retrained[-1] - fixed[-1] > 0.4
    assert np.all(np.diff(fixed) < 0.05)  # falls (up to noise) as the code rotates away


def _theory(f_learn: np.ndarray, f_drift: np.ndarray, f_inf: np.ndarray) -> TheoryResult:
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    n, q = len(f_learn), 1
    times = t(np.arange(n, dtype=float))
    return TheoryResult(
        learn=TheoryLearn(times, t(f_learn), t(np.zeros((n, q))), t(f_learn), t(np.zeros((n, q)))),
        nngp=Equilibrium(t(Y), t([0.0])), ntk=Equilibrium(t(Y), t([0.0])),
        kernel_nngp=t(np.eye(P + q)), kernel_ntk=t(np.eye(P + q)),
        drift=TheoryDrift(0.0, times, t(f_drift), t(np.zeros((n, q))), t(f_inf), t([0.0])))


def test_theory_decoding_ignores_signals_below_its_resolution():
    rng = np.random.default_rng(0)
    n = 5
    learn = np.linspace(0, 1, n)[:, None] * Y
    scale = np.exp(-np.array([0.0, 2, 5, 12, 25]))[:, None]  # odd φ after the freeze: e^(−γτ) f(t0)
    drift = scale * (Y + 0.1 * rng.normal(size=P))
    out = decode_theory(_theory(learn, drift, np.zeros(P)), Y, cv_folds=4, bins=9, resolution=1e-4)
    assert out["learn"].accuracy[0] == 0.5 and (out["learn"].accuracy[1:] == 1).all()
    assert out["drift"].accuracy[:3].min() > 0.95 and (out["drift"].accuracy[3:] == 0.5).all()
    assert out["drift"].accuracy_inf == 0.5
    assert out["drift"].counts.shape == (n, 2, 9)
    unresolved = decode_theory(_theory(learn, drift, np.zeros(P)), Y, cv_folds=4, bins=9)
    assert unresolved["drift"].accuracy[-1] > 0.95  # scale-free: e^(−25) alone is no reason for chance


def test_sim_decoding_pools_networks_and_reads_the_population():
    rng = np.random.default_rng(0)
    n, E, units = 3, 16, 6
    signal = np.array([0.0, 0.3, 3.0])[:, None, None]
    f = signal * Y + rng.normal(size=(n, E, P))  # [n, E, P]: noisy single networks
    act = rng.normal(size=(n, E, P, units)) + Y[None, None, :, None] * np.array([2.0, 1.0, 0.0])[:, None, None, None]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    phase = SimPhase(torch.arange(n, dtype=torch.float64), as_t(f), as_t(f[..., :2]), as_t(act), as_t(act[..., :2, :]))
    out = decode_sim(SimResult(learn=phase, drift=phase, t0=1.0), Y, cv_folds=5, bins=10, population_networks=3)
    learn, drift = out["learn"], out["drift"]
    assert abs(learn.accuracy[0] - 0.5) < 0.1 and learn.accuracy[2] > 0.9
    # one network at signal 0.3 is a poor reader; 16 networks together read it well
    assert learn.accuracy[1] < 0.7 < learn.accuracy_population[1]
    assert learn.counts.sum(axis=(1, 2)).tolist() == [E * P] * n
    assert learn.population_fixed is None
    assert drift.population_fixed[0] > 0.9 and abs(drift.population_fixed[2] - 0.5) < 0.15
    assert drift.population_retrained[1] > 0.9


@pytest.mark.parametrize("bad", [np.zeros((P, 1))])
def test_decoder_rejects_a_single_class(bad):
    with pytest.raises(ValueError, match="class"):
        LinearDecoder().fit(bad, np.ones(P))
