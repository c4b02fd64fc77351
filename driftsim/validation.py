"""The one home of input validation: every rule a user's value must pass, written once with one message.

Each check raises a ValueError that names the config key (or argument), the value and what is allowed,
``"theory.tol=2 is not allowed: a number in (0, 1)"``. ``config.py`` runs these checks on a config before
any work; the domain functions (theory, simulation, tasks) run the same checks on their arguments, so a
direct caller gets the same message as a user of the command line. A shared foundation: imports nothing
of driftsim.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["require", "positive", "integer", "choice", "check_tol", "check_depth", "check_ensemble",
           "check_activity_units", "check_t0", "check_freeze", "check_inputs", "check_labels",
           "check_synthetic_task", "check_image_pair_task"]


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ValueError("{key}={value!r} is not allowed: {allowed}")`` unless ``ok``.

    Parameters
    ----------
    ok : bool
        Whether the value passes.
    key : str
        The config key or argument, e.g. ``"theory.tol"``.
    value : Any
        The value given.
    allowed : str
        What is allowed, e.g. ``"a number in (0, 1)"``.

    Raises
    ------
    ValueError
        When ``ok`` is false.
    """
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed: {allowed}")


def positive(key: str, value: Any, optional: bool = False) -> Optional[float]:
    """``float(value)`` after checking that it is a positive finite number (None too, when ``optional``).

    Parameters
    ----------
    key : str
        The config key, e.g. ``"dynamics.T"``.
    value : Any
        The value given.
    optional : bool
        Whether None (unset) is allowed.

    Returns
    -------
    float or None

    Raises
    ------
    ValueError
        ``"{key}={value!r} is not allowed: a positive finite number"``.
    """
    if value is None and optional:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    require(ok, key, value, "a positive finite number")
    return float(value)


def integer(key: str, value: Any, minimum: int) -> int:
    """``value`` after checking that it is an integer >= ``minimum``.

    Raises
    ------
    ValueError
        ``"{key}={value!r} is not allowed: an integer >= {minimum}"``.
    """
    ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum
    require(ok, key, value, f"an integer >= {minimum}")
    return int(value)


def choice(key: str, value: Any, options: Sequence[str]) -> str:
    """``value`` after checking that it is one of ``options``.

    Raises
    ------
    ValueError
        ``"{key}={value!r} is not allowed: one of [...]"``.
    """
    require(value in options, key, value, f"one of {list(options)}")
    return value


def check_tol(tol: float) -> float:
    """``theory.tol``, the target accuracy of the Volterra solution (SPEC §11): a number in (0, 1).

    Raises
    ------
    ValueError
        ``"theory.tol=... is not allowed: a number in (0, 1)"``.
    """
    require(isinstance(tol, Real) and 0 < tol < 1, "theory.tol", tol, "a number in (0, 1)")
    return float(tol)


def check_depth(depth: int) -> int:
    """``model.depth``, the number L of hidden layers (SPEC §1.1): an integer >= 1."""
    return integer("model.depth", depth, 1)


def check_ensemble(ensemble: int, antithetic: bool) -> int:
    """``sim.ensemble``: an integer >= 1, even when ``sim.antithetic`` pairs the networks (SPEC §8).

    Raises
    ------
    ValueError
        Naming ``sim.ensemble`` and what is allowed.
    """
    integer("sim.ensemble", ensemble, 1)
    require(not antithetic or ensemble % 2 == 0, "sim.ensemble", ensemble, "an even number when sim.antithetic=true")
    return int(ensemble)


def check_activity_units(units: int, width: int) -> int:
    """``sim.activity_units``, the hidden units snapshotted per network: an integer in [0, model.width]."""
    ok = isinstance(units, Integral) and not isinstance(units, bool) and 0 <= units <= width
    require(ok, "sim.activity_units", units, f"an integer in [0, model.width={width}]")
    return int(units)


def check_t0(t0: Optional[float], t_end: Optional[float] = None) -> Optional[float]:
    """``protocol.t0``, the time of the freeze (SPEC §6.1): unset, or a time in [0, t_end] of the learning run.

    Parameters
    ----------
    t0 : float or None
        The freeze time; None: no drift phase.
    t_end : float, optional
        The end of learning (dynamics.t_max, or the last recorded time); None checks t0 >= 0 only.

    Raises
    ------
    ValueError
        ``"protocol.t0=... is outside the run: allowed ..."``.
    """
    if t0 is None:
        return None
    ok = isinstance(t0, Real) and math.isfinite(t0) and t0 >= 0 and (t_end is None or t0 <= t_end)
    if not ok:
        end = "its end" if t_end is None else f"{t_end:g}"
        raise ValueError(f"protocol.t0={t0!r} is outside the run: allowed unset (no drift phase) or a time "
                         f"within the learning run [0, {end}]")
    return float(t0)


def check_freeze(t0: Optional[float], t_drift: Optional[Tensor], t_end: float) -> None:
    """A drift phase needs both halves: a freeze time ``t0`` in [0, t_end] and its recorded times ``t_drift``
    (times since the freeze, SPEC §6.1); neither without the other.

    Raises
    ------
    ValueError
        Naming protocol.t0 or t_drift.
    """
    check_t0(t0, t_end)
    if t0 is not None and t_drift is None:
        raise ValueError(f"protocol.t0={t0!r} asks for a drift phase: pass its recorded times t_drift "
                         "(times since the freeze)")
    if t0 is None and t_drift is not None:
        raise ValueError("t_drift was given but protocol.t0 is unset: there is no drift phase to record")


def check_inputs(name: str, x: Tensor, dim: Optional[int] = None) -> Tensor:
    """Inputs [points, N0] as a tensor, after checking that they are a finite 2-D array (with ``dim`` columns).

    Raises
    ------
    ValueError
        Naming ``name`` (x_train, x_test) and what is wrong.
    """
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [points, input_dim]; got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has input dimension {x.shape[1]}; expected {dim} to match x_train")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; allowed: finite values only")
    return x


def check_labels(y: Tensor, p: int) -> Tensor:
    """Training labels [P] as a tensor, after checking their shape against the P training points and that
    they are finite.

    Raises
    ------
    ValueError
        Naming y_train and what is wrong.
    """
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != p:
        raise ValueError(f"y_train must have shape [{p}] to match x_train; got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y_train contains NaN or inf; allowed: finite values only")
    return y


def check_synthetic_task(n_train: int, overlap: float, input_dim: Optional[int]) -> None:
    """The keys of the synthetic task (SPEC §7): ``task.n_train`` P an even integer >= 2 (balanced labels),
    ``task.overlap`` ρ in [-1, 1], ``task.input_dim`` N0 unset or >= P + 1.

    Raises
    ------
    ValueError
        Naming the key and what is allowed.
    """
    ok = isinstance(n_train, Integral) and n_train >= 2 and n_train % 2 == 0
    require(ok, "task.n_train", n_train, "an even integer >= 2")
    require(isinstance(overlap, Real) and -1.0 <= overlap <= 1.0, "task.overlap", overlap, "a number in [-1, 1]")
    ok = input_dim is None or (isinstance(input_dim, Integral) and input_dim >= n_train + 1)
    require(ok, "task.input_dim", input_dim, "unset or an integer >= task.n_train + 1")


def check_image_pair_task(classes: Sequence[int], n_per_class: int, n_test: int) -> None:
    """The counts of a two-class image task (SPEC §7): two different ``task.classes``, ``task.n_per_class``
    >= 1, ``task.n_test`` an even integer >= 0 (half per class).

    Raises
    ------
    ValueError
        Naming the key and what is allowed.
    """
    ok = len(classes) == 2 and classes[0] != classes[1]
    require(ok, "task.classes", classes, "two different class labels, e.g. [0,1]")
    integer("task.n_per_class", n_per_class, 1)
    ok = isinstance(n_test, Integral) and n_test >= 0 and n_test % 2 == 0
    require(ok, "task.n_test", n_test, "an even integer >= 0 (half per class)")
