"""How much task information the predictor and the hidden representation keep over time (DESIGN.md
``analysis/decode.py``; SPEC §6 drift with a frozen readout, §9 finding 5).

Per recorded time of a phase, on the P training examples:

- **Histograms** of the predictor per class (``counts [n, 2, B]``, class y = +1 first, i.e. the first of
  ``task.classes``), with bin edges ``[B+1]`` shared by every time and both classes of the phase.
  Theory: the mean predictor f̄(x_μ) (P values per time); simulation: every network's f_e(x_μ) (E·P).
- **accuracy** ``[n]``: a cross-validated linear classifier (:class:`LinearDecoder`) that reads the
  predictor value of one example and guesses its class. Theory: the mean predictor. Simulation: one
  network's output, the classifier pooled over networks — what a downstream reader of a single
  network could do; the folds split *examples*, so a test example is unseen by every network.
- **accuracy_population** ``[n]`` (simulation): the same classifier on the E outputs of the ensemble
  as features of an example — the information left in the whole ensemble.
- **accuracy_inf** (theory, drift): the accuracy on the decorrelated limit f̄_fr(x, ∞) (SPEC §6.4).
- **accuracy_network** ``[n]`` (theory, with the covariance of SPEC §10): the theory's counterpart of the
  simulation's ``accuracy`` — the expected accuracy of the best threshold classifier sign(s (f − θ)) on one
  network's output, each example's output Gaussian N(f̄_μ, var_μ) (:func:`network_accuracy`).
- **population_fixed / population_retrained** ``[m]`` (simulation, drift, when hidden activity was
  recorded): a decoder on the last hidden layer's activity of one network, trained at the freeze
  (drift time 0) and kept fixed, against one retrained at every time; both cross-validated with the
  same folds and averaged over ``decode.population_networks`` networks. Fixed falls as the code
  drifts; retrained stays up while the information is still there.

The classifiers standardise their inputs: during drift the predictor shrinks by orders of magnitude
(e^(−γτ) for odd φ), and a scale-free reader separates "information gone" from "signal small". For the
theory, whose mean predictor has no noise to hide a tiny signal, differences below the theory's
accuracy (``resolution`` = theory.tol) do not count.
With k = min(decode.cv_folds, smallest class) stratified folds; k < 2 gives NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.special import ndtr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["LinearDecoder", "PhaseDecoding", "at_time", "class_histograms", "folds", "cv_accuracy", "population_accuracy",
           "network_accuracy", "decode_theory", "decode_sim"]


class LinearDecoder(ClassifierMixin, BaseEstimator):
    """Standardised logistic regression: a linear reader of predictor values or hidden activity.

    A scikit-learn classifier (``clone``, ``Pipeline``, ``cross_val_score`` and grid searches work);
    ``C``, ``solver`` and ``max_iter`` are passed to :class:`~sklearn.linear_model.LogisticRegression`;
    ``solver="auto"`` picks liblinear for two classes (driftsim's run-file decoders, whose numbers earlier
    files hold: liblinear also penalises the intercept) and lbfgs for more. lbfgs is 2–4× faster on hundreds
    of features (benchmarks/README.md), which the drift metrics' decoders ask for.
    Fitted attributes: ``classes_``, ``n_features_in_``, ``n_iter_``, ``scaler_`` (StandardScaler),
    ``logistic_`` (LogisticRegression); the two are applied in turn, without a Pipeline's validation of
    every step (a third of a fit's time at hundreds of cells).
    """

    def __init__(self, C: float = 1.0, solver: str = "auto", max_iter: int = 1000):
        self.C = C
        self.solver = solver
        self.max_iter = max_iter

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        self.scaler_ = StandardScaler().fit(X)
        solver = self.solver
        if solver == "auto":
            solver = "liblinear" if len(self.classes_) == 2 else "lbfgs"
        self.logistic_ = LogisticRegression(C=self.C, solver=solver, max_iter=self.max_iter)
        self.logistic_.fit(self.scaler_.transform(X), y)
        self.n_iter_ = self.logistic_.n_iter_
        return self

    def _scaled(self, X):
        check_is_fitted(self)
        return self.scaler_.transform(validate_data(self, X, reset=False))

    def decision_function(self, X):
        scaled = self._scaled(X)  # checks the fit first
        return self.logistic_.decision_function(scaled)

    def predict_proba(self, X):
        scaled = self._scaled(X)  # checks the fit first
        return self.logistic_.predict_proba(scaled)

    def predict(self, X):
        scaled = self._scaled(X)  # checks the fit first
        return self.logistic_.predict(scaled)


@dataclass
class PhaseDecoding:
    """Decoding of one phase of one source: ``/decode/<source>/<phase>/*`` and ``/hist/<source>/<phase>/*``."""
    accuracy: np.ndarray  # [n]
    counts: np.ndarray  # [n, 2, B]
    edges: np.ndarray  # [B+1]
    accuracy_population: Optional[np.ndarray] = None  # [n], simulation
    accuracy_inf: Optional[float] = None  # theory, drift
    accuracy_network: Optional[np.ndarray] = None  # [n], theory with its covariance
    population_fixed: Optional[np.ndarray] = None  # [m], simulation, drift, with activity
    population_retrained: Optional[np.ndarray] = None  # [m]


def at_time(f, i: int) -> np.ndarray:
    """Time i of a record f [n, ...] as float64 numpy: f a tensor, an array, or an h5py dataset (a streamed
    simulation's records, read one time at a time so that memory holds one time, never the run)."""
    return _float64(f[i])


def _float64(value) -> np.ndarray:
    """A tensor or array as float64 numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def class_histograms(f, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts [n, 2, B] of the predictor per class (y = +1, then y = −1) and the shared edges [B+1].

    f: [n, P] (mean predictor) or [n, E, P] (every network), read one time at a time (:func:`at_time`);
    y: [P] labels ±1. The edges are numpy's for all of f at once: they depend on its least and largest value.
    """
    y, n = np.asarray(y), len(f)
    low, high = np.inf, -np.inf
    for i in range(n):
        v = at_time(f, i)
        low, high = min(low, v.min()), max(high, v.max())
    edges = np.histogram_bin_edges(np.array([low, high]), bins=bins)  # a constant predictor still gets a range
    counts = np.zeros((n, 2, bins), dtype=np.int64)
    for i in range(n):
        v = at_time(f, i).reshape(-1, len(y))  # [E or 1, P]
        for k, c in enumerate((1, -1)):
            counts[i, k] = np.histogram(v[:, y == c], bins=edges)[0]
    return counts, edges


def folds(y: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, test) example indices; k = min(n_folds, smallest class) folds, [] if k < 2."""
    k = min(n_folds, int(np.unique(y, return_counts=True)[1].min()))
    if k < 2:
        return []
    # deterministic folds: every time and every decoder of a run sees the same split
    return list(StratifiedKFold(n_splits=k).split(np.zeros((len(y), 1)), y))


def cv_accuracy(X: np.ndarray, y: np.ndarray, splits: list) -> float:
    """Cross-validated accuracy of a :class:`LinearDecoder` on X [P, features] or [P, E, features].

    With a network axis the samples are (example, network) pairs, pooled, and the splits of examples
    keep all networks of an example on the same side. NaN without splits.
    """
    if not splits:
        return float("nan")
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(X.shape[0], -1, X.shape[-1])  # [P, E or 1, features]
    E = X.shape[1]
    scores = []
    for train, test in splits:
        clf = LinearDecoder().fit(X[train].reshape(-1, X.shape[-1]), np.repeat(y[train], E))
        scores.append(clf.score(X[test].reshape(-1, X.shape[-1]), np.repeat(y[test], E)))
    return float(np.mean(scores))


def population_accuracy(activity: np.ndarray, y: np.ndarray, splits: list) -> tuple[np.ndarray, np.ndarray]:
    """Fixed vs retrained decoders on one network's hidden activity [m, P, units] after the freeze.

    Returns (fixed [m], retrained [m]): fixed is trained at drift time 0 on each fold's training
    examples and tested at every time on the held-out ones; retrained is refit at every time.
    """
    m = activity.shape[0]
    if not splits:
        return np.full(m, np.nan), np.full(m, np.nan)
    fixed, retrained = np.zeros(m), np.zeros(m)
    for train, test in splits:
        at_freeze = LinearDecoder().fit(activity[0, train], y[train])
        for i in range(m):
            fixed[i] += at_freeze.score(activity[i, test], y[test])
            retrained[i] += LinearDecoder().fit(activity[i, train], y[train]).score(activity[i, test], y[test])
    return fixed / len(splits), retrained / len(splits)


def network_accuracy(mean: np.ndarray, var: np.ndarray, y: np.ndarray, thresholds: int = 512) -> np.ndarray:
    """SPEC §10: expected accuracy [n] of a threshold classifier reading one network's output, when
    example μ's output is N(mean[t, μ], var[t, μ]) over the ensemble: max over θ and s = ±1 of
    (1/P) Σ_μ Φ(s y_μ (mean − θ)/sd). mean, var: [n, P]; examples with NaN variance are left out.

    The threshold is the best one for the predicted distribution (the simulation's pooled classifier
    estimates it from E networks per example); θ runs over the means and a grid spanning ±6 sd.
    """
    mean, var, y = (np.asarray(a, dtype=np.float64) for a in (mean, var, y))
    keep = np.isfinite(var).all(axis=0)
    if not keep.any():
        return np.full(mean.shape[0], np.nan)
    m, sd, y = mean[:, keep], np.sqrt(np.clip(var[:, keep], 0, None)), y[keep]
    out = np.empty(mean.shape[0])
    for i, (mi, si) in enumerate(zip(m, sd)):
        span = np.linspace((mi - 6 * si).min(), (mi + 6 * si).max(), thresholds)
        theta = np.concatenate([span, mi])[None, :]
        margin = y[:, None] * (mi[:, None] - theta)
        with np.errstate(divide="ignore", invalid="ignore"):  # sd = 0: a step, ½ on the threshold itself
            p = np.where(si[:, None] > 0, ndtr(margin / si[:, None]), 0.5 * (1 + np.sign(margin)))
        p_right = p.mean(axis=0)  # s = +1; s = −1 is 1 − that
        out[i] = np.maximum(p_right, 1 - p_right).max()
    return out


def _resolved(f: np.ndarray, resolution: float) -> np.ndarray:
    """f rounded to multiples of ``resolution``: differences below it carry no information."""
    return np.round(f / resolution) * resolution if resolution > 0 else f


def _predictor_decoding(f, y: np.ndarray, splits: list, bins: int, resolution: float = 0.0) -> PhaseDecoding:
    """Histograms and accuracy of a predictor f [n, P] (theory) or [n, E, P] (simulation), one time at a time."""
    counts, edges = class_histograms(f, y, bins)
    # [P, E or 1, 1]: one scalar feature per (example, network)
    accuracy = np.array([cv_accuracy(_resolved(at_time(f, i), resolution).reshape(-1, len(y)).T[..., None], y, splits)
                         for i in range(len(f))])
    return PhaseDecoding(accuracy=accuracy, counts=counts, edges=edges)


def decode_theory(result, y_train, *, cv_folds: int = 5, bins: int = 40,
                  resolution: float = 0.0) -> dict[str, PhaseDecoding]:
    """Decode a :class:`~driftsim.results.TheoryResult`'s mean predictor: {"learn": ..., "drift": ...};
    with its covariance (SPEC §10) also the predicted accuracy of one network (``accuracy_network``).

    The classifiers read the predictor rounded to multiples of ``resolution`` (the app passes
    theory.tol, the accuracy of the theory): without it the scale-free reader would still separate the
    classes when an odd φ's drifting predictor is e^(−25) ≈ 1e-11 of its size, far below anything the
    theory resolves or a noisy network could show.
    """
    y = np.asarray(y_train)
    splits = folds(y, cv_folds)
    out = {"learn": _predictor_decoding(result.learn.f_train.cpu().numpy(), y, splits, bins, resolution)}
    if result.drift is not None:
        drift = _predictor_decoding(result.drift.f_train.cpu().numpy(), y, splits, bins, resolution)
        f_inf = _resolved(result.drift.f_inf_train.cpu().numpy(), resolution)
        drift.accuracy_inf = cv_accuracy(f_inf[:, None], y, splits)
        out["drift"] = drift
    for name, dec in out.items():
        phase = getattr(result, name)
        if phase.var_train is not None:
            dec.accuracy_network = network_accuracy(phase.f_train.cpu().numpy(), phase.var_train.cpu().numpy(), y)
    return out


def decode_sim(result, y_train, *, cv_folds: int = 5, bins: int = 40,
               population_networks: int = 8) -> dict[str, PhaseDecoding]:
    """Decode a :class:`~driftsim.results.SimResult`: every network's predictor, the ensemble's outputs
    as a population, and (drift phase, when recorded) the hidden activity of the first
    ``population_networks`` networks."""
    y = np.asarray(y_train)
    splits = folds(y, cv_folds)
    out = {}
    for name in ("learn", "drift"):
        phase = getattr(result, name)
        if phase is None:
            continue
        f = phase.f_train  # [n, E, P], read one time at a time
        dec = _predictor_decoding(f, y, splits, bins)
        dec.accuracy_population = np.array([cv_accuracy(at_time(f, i).T, y, splits) for i in range(len(f))])
        if name == "drift" and phase.activity_train is not None:
            act = phase.activity_train  # [m, E, P, units]
            per_net = [population_accuracy(_float64(act[:, e]), y, splits)
                       for e in range(min(population_networks, act.shape[1]))]
            dec.population_fixed = np.mean([p[0] for p in per_net], axis=0)
            dec.population_retrained = np.mean([p[1] for p in per_net], axis=0)
        out[name] = dec
    return out
