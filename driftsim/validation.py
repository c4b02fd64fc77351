"""The one home of input validation: every rule a user's value must pass, written once with one message.

Each check raises a ValueError that names the config key (or argument), the value and what is allowed,
``"theory.tol=2 is not allowed: a number in (0, 1)"``. ``config.py`` runs these checks on a config before
any work; the domain functions (theory, simulation, tasks) run the same checks on their arguments, so a
direct caller gets the same message as a user of the command line. A shared foundation: imports nothing
of driftsim.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["require", "positive", "integer", "choice", "check_tol", "check_depth", "check_ensemble",
           "check_chunk", "check_activity_units", "check_t0", "check_freeze", "check_inputs", "check_labels",
           "check_synthetic_task", "check_image_pair_task", "check_seed", "check_scales", "check_proximity",
           "check_rate_ratio", "check_finite", "numerical_failures", "NumericalError", "SCALE_RANGE", "MAX_DEPTH",
           "MAX_RATE_RATIO", "MIN_RUN_LENGTH", "SEED_LIMIT", "check_run_length"]

# The scales a run's numbers take, σ^(2(L+1)) (NNGP kernel), σ0^(2L) (NTK) and γ = T/σ² (the rate that sets
# the time unit), stay within this range: products of a few of them and their eigendecompositions then stay
# inside float64 (1e±308) with room to spare.
SCALE_RANGE = (1e-100, 1e100)
# Beyond ~100 layers the layer kernels (SPEC §3) have converged to their fixed point, where all inputs are
# almost perfectly correlated and the tasks' classes can no longer be told apart; the recursion costs O(L).
MAX_DEPTH = 100
# The gradient phase (rate λ_max of the NTK) and the diffusive phase (rate γ) are resolved on one time grid and
# one ladder of exponentials e^(−α γ τ) (SPEC §11): beyond 14 decades apart, e^(−γ τ) at the gradient phase's
# lags differs from 1 by less than float64's 16 digits resolve, and the expansion has hundreds of rates.
MAX_RATE_RATIO = 1e14
# The recorded times start at 1e-6 of the run's length (times.record_times) and the theory's grid merges times
# closer than 1e-12 (theory.volterra.graded_grid): a shorter learning run has no distinct recorded times.
MIN_RUN_LENGTH = 1e-4
SEED_LIMIT = 2 ** 63  # seeds are stored as signed 64-bit integers (HDF5 attribute, numpy SeedSequence)


class NumericalError(ValueError):
    """A computation left float64's range (NaN, inf, a failed eigendecomposition) for the user's values."""


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
    """``model.depth``, the number L of hidden layers (SPEC §1.1): an integer in [1, MAX_DEPTH].

    Raises
    ------
    ValueError
        ``"model.depth=... is not allowed: an integer in [1, 100] ..."``.
    """
    ok = isinstance(depth, Integral) and not isinstance(depth, bool) and 1 <= depth <= MAX_DEPTH
    require(ok, "model.depth", depth, f"an integer in [1, {MAX_DEPTH}] (deeper kernels have converged to their "
            "fixed point, where all inputs look alike)")
    return int(depth)


def check_seed(seed: int) -> int:
    """``seed``: an integer in [0, 2**63), stored as a signed 64-bit integer.

    Raises
    ------
    ValueError
        ``"seed=... is not allowed: an integer in [0, 2**63)"``.
    """
    ok = isinstance(seed, Integral) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT
    require(ok, "seed", seed, "an integer in [0, 2**63)")
    return int(seed)


def _power_range(key: str, value: float, power: float, what: str) -> None:
    """Require value**power within SCALE_RANGE, stating the range of ``value`` that this allows."""
    lo, hi = SCALE_RANGE
    low, high = lo ** (1 / power), hi ** (1 / power)
    require(low <= value <= high, key, value, f"a number in [{low:.3g}, {high:.3g}], so that {what} lies "
            f"within [{lo:g}, {hi:g}] (float64 stays exact and finite there)")


def check_scales(T: float, sigma: float, sigma0: float, depth: Optional[int] = None) -> None:
    """The prior's scales (SPEC §1.2, §2, §3.3) against SCALE_RANGE: σ^(2(L+1)) (the NNGP kernel), σ0^(2L)
    (the NTK) and γ = T/σ² (the weights' relaxation rate; every time is in units where 1/γ is the diffusive
    time scale). Each of T, σ, σ0 is first checked to be a positive finite number.

    Parameters
    ----------
    T, sigma, sigma0 : float
        dynamics.T, dynamics.sigma, dynamics.sigma0.
    depth : int, optional
        model.depth L; None checks what every depth needs (the bounds of L = 1, the widest).

    Raises
    ------
    ValueError
        Naming the key, its value and the range allowed (at this depth).
    """
    T, sigma, sigma0 = (positive(f"dynamics.{k}", v) for k, v in (("T", T), ("sigma", sigma), ("sigma0", sigma0)))
    L = 1 if depth is None else depth
    at = "L = model.depth >= 1" if depth is None else f"L = model.depth = {depth}"
    _power_range("dynamics.sigma", sigma, 2 * (L + 1), f"the NNGP kernel's scale σ^(2(L+1)) ({at})")
    _power_range("dynamics.sigma0", sigma0, 2 * L, f"the NTK's scale σ0^(2L) ({at})")
    lo, hi = SCALE_RANGE
    require(lo * sigma ** 2 <= T <= hi * sigma ** 2, "dynamics.T", T,
            f"a number in [{lo * sigma ** 2:.3g}, {hi * sigma ** 2:.3g}], so that the relaxation rate γ = T/σ² "
            f"(σ = dynamics.sigma = {sigma:g}) lies within [{lo:g}, {hi:g}]")


def check_proximity(lam: float, gamma: float, lam_max: Optional[float] = None) -> float:
    """``dynamics.lam``, the proximity λ of MPL (SPEC §1.3), one step being dt = 1/λ: it must exceed the
    prior's rate γ = T/σ² and, when known, the largest NTK eigenvalue λ_max on the training set. A weaker
    proximity lets the step follow the objective rather than the proximity term: the chain is then no
    discretisation of the Langevin dynamics (its AR(1) factor κ = 1/(1 + γ/λ) is far from e^(−γ/λ), and the
    gradient phase, of rate λ_max, passes within one step).

    Raises
    ------
    ValueError
        ``"dynamics.lam=... is not allowed: a number > ..."``.
    """
    lam = positive("dynamics.lam", lam)
    bound, why = (gamma, f"γ = T/σ² = {gamma:.3g}") if lam_max is None or lam_max < gamma else \
        (lam_max, f"the largest NTK eigenvalue on the training set, λ_max = {lam_max:.3g}")
    require(lam > bound, "dynamics.lam", lam, f"a number > {bound:.3g} ({why}): with a weaker proximity one MPL "
            "step dt = 1/lam spans the dynamics' fastest time scale")
    return lam


def check_run_length(t_max: Optional[float]) -> Optional[float]:
    """``dynamics.t_max``: unset (25 σ²/T) or a finite time >= MIN_RUN_LENGTH.

    Raises
    ------
    ValueError
        ``"dynamics.t_max=... is not allowed: unset or a time in [1e-4, inf) ..."``.
    """
    if t_max is None:
        return None
    positive("dynamics.t_max", t_max)
    require(t_max >= MIN_RUN_LENGTH, "dynamics.t_max", t_max, f"unset or a time >= {MIN_RUN_LENGTH:g} (the recorded "
            f"times start at 1e-6·t_max and the theory resolves times above 1e-12)")
    return float(t_max)


def check_rate_ratio(lam_max: float, gamma: float, keys: str) -> None:
    """The separation of the dynamics' time scales, λ_max(K_ntk)/γ (gradient phase against diffusion), within
    MAX_RATE_RATIO, before the theory resolves both.

    Parameters
    ----------
    lam_max : float
        The largest NTK eigenvalue on the training set.
    gamma : float
        γ = T/σ².
    keys : str
        The keys and values that set them, e.g. ``"dynamics.sigma0=1000, model.depth=4"``.

    Raises
    ------
    NumericalError
        Naming the ratio, the keys and the bound.
    """
    ratio = lam_max / gamma
    if not (math.isfinite(ratio) and ratio <= MAX_RATE_RATIO):
        raise NumericalError(f"the gradient phase is {ratio:.3g} times faster than the diffusion (λ_max(K_ntk) = "
                             f"{lam_max:.3g}, γ = T/σ² = {gamma:.3g}); allowed at most {MAX_RATE_RATIO:g}, "
                             f"{_failure(keys)}")


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


def check_chunk(chunk: int, antithetic: bool) -> int:
    """``sim.chunk``, the most networks simulated at once: an integer >= 1, even when ``sim.antithetic`` (a pair
    of antithetic networks stays in one chunk).

    Raises
    ------
    ValueError
        Naming ``sim.chunk`` and what is allowed.
    """
    integer("sim.chunk", chunk, 1)
    require(not antithetic or chunk % 2 == 0, "sim.chunk", chunk,
            "an even number when sim.antithetic=true (a pair of antithetic networks stays in one chunk)")
    return int(chunk)


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


def _failure(keys: str) -> str:
    return f"for {keys}: float64 cannot represent this run's numbers; move these keys toward 1"


def check_finite(what: str, value: Tensor, keys: str) -> Tensor:
    """``value`` after checking that every entry is finite: a NaN or inf of a computation is reported where it
    arises, naming the config keys that led there.

    Parameters
    ----------
    what : str
        What was computed, e.g. ``"the NTK of the training and test points"``.
    value : Tensor
        The result, any shape.
    keys : str
        The keys and values that led there, e.g. ``"dynamics.sigma0=1000, model.depth=4"``.

    Raises
    ------
    NumericalError
        ``"{what} is not finite (NaN or inf) for {keys}: ..."``.
    """
    if not bool(torch.isfinite(value).all()):
        raise NumericalError(f"{what} is not finite (NaN or inf) {_failure(keys)}")
    return value


@contextmanager
def numerical_failures(keys: str) -> Iterator[None]:
    """Turn a failed eigendecomposition or Cholesky factorisation (torch.linalg.LinAlgError) or an overflow
    inside the block into a :class:`NumericalError` naming the config keys that led there."""
    try:
        yield
    except (torch.linalg.LinAlgError, OverflowError, ZeroDivisionError) as e:
        raise NumericalError(f"the computation failed ({type(e).__name__}: {str(e).splitlines()[0]}) "
                             f"{_failure(keys)}") from e
