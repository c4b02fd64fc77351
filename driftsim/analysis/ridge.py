"""The finite-population counterpart of the theory's fixed ridge decoder (theory/population.fixed_decoder).

Ridge regression without intercept on the features φ_u(x)/√C of C cells: its dual form is
k̂(x,X) (K̂ + λI)⁻¹ y with the empirical kernel K̂ = (1/C) Σ_u φ_u φ_uᵀ, which tends to the layer kernel as
C → ∞, so its output and accuracy converge to the theory's.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

__all__ = ["fixed_ridge"]


def fixed_ridge(activity, y_fit, fit, evaluate, y_eval, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge decoder fitted on session 0 and read at every session.

    Parameters
    ----------
    activity : array_like [S, C, X]
        Noise-free activity φ of C cells at S sessions and X stimuli.
    y_fit : array_like [P]
        Labels (±1) of the stimuli ``fit``.
    fit, evaluate : array_like of int
        Stimulus indices of the fit (P) and of the scoring (Q).
    y_eval : array_like [Q]
        Labels of the stimuli ``evaluate``.
    ridge : float
        λ > 0 (sklearn ``alpha``), in the units of the layer kernel.

    Returns
    -------
    output : numpy.ndarray [S, Q]
    accuracy : numpy.ndarray [S]
        Fraction of the scored stimuli whose output has the sign of their label.
    """
    a = np.asarray(activity, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"activity must be [sessions, cells, stimuli]; got shape {a.shape}")
    if not ridge > 0:
        raise ValueError(f"ridge={ridge!r} must be > 0")
    features = np.moveaxis(a, 1, 2) / np.sqrt(a.shape[1])  # [S, X, C]
    model = Ridge(alpha=ridge, fit_intercept=False).fit(features[0][np.asarray(fit)], np.asarray(y_fit, float))
    output = np.stack([model.predict(f[np.asarray(evaluate)]) for f in features])
    return output, (np.sign(output) == np.asarray(y_eval)).mean(axis=1)
