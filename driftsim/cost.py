"""The cost of a run, estimated from its config before any work: simulation steps × weights, the theory's
grid size × P², and the memory the largest arrays take. A run whose estimate exceeds a ``limits.max_*`` key
is refused with the estimate and the key to raise, instead of running for days or failing to allocate
after minutes (DESIGN.md "Config keys", README "Errors and reliability").

The estimates are upper-bound style counts of the dominant terms, not measurements: the steps are those
of ``sim.simulate`` exactly, the grid points those of ``theory.volterra.graded_grid`` (counted in closed
form, without building it), the memory the arrays of the task, kernels, networks and recordings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .theory.memory import physical_bytes

__all__ = ["Estimate", "machine_memory_gb", "default_memory_gb", "input_dim", "estimate", "grid_points",
           "check_estimate", "check_grid"]

MEMORY_FRACTION = 0.5  # of the machine's RAM, the default limits.max_memory_gb: room for the OS and the rest
_IMAGE_PIXELS = {"mnist": 784, "cifar10": 3072, "digits": 64}
_BYTES = {"float32": 4, "float64": 8}


def machine_memory_gb() -> float:
    """The machine's physical RAM in GB (theory/memory.physical_bytes: ``os.sysconf``, else 8 GiB)."""
    return physical_bytes() / 1e9


def default_memory_gb() -> float:
    """The default of ``limits.max_memory_gb``: MEMORY_FRACTION of the machine's RAM."""
    return MEMORY_FRACTION * machine_memory_gb()


@dataclass(frozen=True)
class Estimate:
    """What a run needs: simulation ``steps`` (one network's learning run) and ``weights`` (all networks),
    theory ``grid`` points (None before the grid's first step is known, or without theory), ``memory_gb``."""
    steps: float
    weights: float
    grid: Optional[float]
    memory_gb: float
    points: int  # P + Q


def input_dim(task) -> int:
    """N0 of a ``task`` config: the synthetic task's input_dim (P + 1 unset), an image set's pixels."""
    if task.name == "synthetic":
        return task.input_dim if task.input_dim is not None else task.n_train + 1
    return _IMAGE_PIXELS[task.name]


def _points(task) -> tuple[int, int]:
    """(P, Q) of a ``task`` config."""
    if task.name == "synthetic":
        return task.n_train, 1
    return 2 * task.n_per_class, task.n_test


def estimate(conf) -> Estimate:
    """The cost of a validated :class:`driftsim.config.DriftsimConfig` from its keys alone (no grid yet).

    Memory counts float64 copies of the task's inputs (host and device), the theory's (P+Q)² kernels (a few of
    them; its expansion and Volterra solve are checked against theory.memory_gb by theory/memory.py), per
    network of one chunk (min(sim.ensemble, sim.chunk) networks simulated at once) its weights four times over
    (weights, gradient, noise, prefetched noise) and one layer's activations on every point, and per network of
    the whole ensemble the recorded predictors and hidden activity of one time (the app streams the records to
    disk and decodes them a time at a time).
    """
    P, Q = _points(conf.task)
    X, n0 = P + Q, input_dim(conf.task)
    s, d = conf.sim, conf.dynamics
    n_rec = 2 * (conf.record.n_times + 1)  # both phases
    memory = 2 * 8.0 * X * n0
    if conf.mode in ("theory", "both"):
        memory += 4 * 8.0 * X * X
    steps = weights = 0.0
    if conf.mode in ("sim", "both"):
        dt = 1 / d.lam if d.scheme == "mpl" else d.dt
        steps = math.ceil(d.t_end / dt) + n_rec  # substeps between recorded times land on each of them
        weights = s.ensemble * _weights(conf)
        memory += min(s.ensemble, s.chunk) * _network_bytes(conf)  # the networks of one chunk
        # the records stream to disk (the app's scratch file, as large as in the run file, uncompressed) and are
        # read back one time at a time: a float64 time of every network, copied by its decoders
        memory += 3 * 8.0 * s.ensemble * X * (1 + s.activity_units)
    if conf.observe.sessions:
        o = conf.observe
        memory += 8.0 * o.sessions * o.networks * X * o.cells * (o.trials + 1)
    return Estimate(steps=steps, weights=weights, grid=None, memory_gb=memory / 1e9, points=X)


def _weights(conf) -> float:
    """Weights of one network: input layer, hidden layers, readout."""
    m = conf.model
    return float(input_dim(conf.task)) * m.width + (m.depth - 1) * float(m.width) ** 2 + m.width


def _network_bytes(conf) -> float:
    """Memory of one network of a chunk: its weights four times over (weights, gradient, noise, prefetched
    noise) and one layer's activations on every point."""
    P, Q = _points(conf.task)
    return _BYTES[conf.sim.dtype] * (4 * _weights(conf) + 2 * (P + Q) * float(conf.model.width))


def grid_points(t_end: float, h_first: float, h_max: float, growth: float) -> float:
    """The number of steps of ``theory.volterra.graded_grid(t_end, h_first, h_max, growth)`` (step
    h(t) = clip(growth·t, h_first, h_max)), counted in closed form: constant h_first up to t1 = h_first/growth,
    geometric growth by (1 + growth) per step up to t2 = h_max/growth, constant h_max after. A float: it
    may be far beyond what can be built."""
    if h_first >= h_max:
        return math.ceil(t_end / h_max)
    t1, t2 = h_first / growth, h_max / growth
    n = min(t1, t_end) / h_first
    if t_end > t1:
        n += math.log(min(t2, t_end) / t1) / math.log1p(growth)
    if t_end > t2:
        n += (t_end - t2) / h_max
    return math.ceil(n)


def _refuse(what: str, key: str, limit: float, note: str = "") -> None:
    raise ValueError(f"this run needs {what}, more than {key}={limit:.3g}{note}: it could not finish or fit; make "
                     f"it smaller (the keys named), or raise {key} if the machine can")


def check_estimate(conf, est: Estimate) -> None:
    """Refuse a run whose simulation steps exceed ``limits.max_steps`` or whose memory exceeds
    ``limits.max_memory_gb`` (unset: MEMORY_FRACTION of the machine's RAM).

    Raises
    ------
    ValueError
        ``"this run needs ... more than limits.max_steps=...: ... raise limits.max_steps ..."``, with the
        keys that set the estimate.
    """
    lim, d, m, s = conf.limits, conf.dynamics, conf.model, conf.sim
    if est.steps > lim.max_steps:
        step = f"1/dynamics.lam={1 / d.lam:g}" if d.scheme == "mpl" else f"dynamics.dt={d.dt:g}"
        _refuse(f"{est.steps:.3g} simulation steps × {est.weights:.3g} weights = {est.steps * est.weights:.3g} "
                f"weight updates (dynamics.t_max={d.t_end:g} in steps of {step}; sim.ensemble={s.ensemble} "
                f"networks of model.width={m.width})", "limits.max_steps", lim.max_steps)
    budget = lim.max_memory_gb if lim.max_memory_gb is not None else default_memory_gb()
    if est.memory_gb > budget:
        t = conf.task
        keys = f"task.n_train={t.n_train}" if t.name == "synthetic" else f"task.n_per_class={t.n_per_class}, " \
            f"task.n_test={t.n_test}"
        sizes = f"P + Q = {est.points} points ({keys}) of N0 = {input_dim(t)} inputs"
        note = "" if lim.max_memory_gb is not None else f" (unset: {MEMORY_FRACTION:g} of this machine's RAM)"
        if conf.mode in ("sim", "both"):
            sizes += (f", sim.ensemble={s.ensemble} networks (sim.chunk={s.chunk} at once) of model.width={m.width}, "
                      f"model.depth={m.depth}")
            # the chunk is not chosen for the user: the numbers depend on it (sim.simulate), never on the machine
            per, at_once = _network_bytes(conf), min(s.ensemble, s.chunk)
            fits = int((budget * 1e9 - (est.memory_gb * 1e9 - at_once * per)) // per)
            fits -= fits % 2 if s.antithetic else 0
            if 1 <= fits < at_once:
                note += f"; sim.chunk={fits} (networks simulated at once) would fit"
        _refuse(f"about {est.memory_gb:.3g} GB of memory for {sizes}", "limits.max_memory_gb", budget, note)


def check_grid(conf, est: Estimate, h_first: float) -> Estimate:
    """``est`` with the theory's grid points (``theory.discretisation.grid_for``, first step ``h_first``),
    after refusing a grid beyond ``limits.max_grid`` or one whose arrays (grid × (P+Q) values, a few
    copies) exceed the memory budget.

    Raises
    ------
    ValueError
        Naming the estimate, the keys that set it and ``limits.max_grid``.
    """
    from .theory.discretisation import GRID_GROWTH, GRID_MAX

    d, tol = conf.dynamics, conf.theory.tol
    t_end = d.t_end
    n = grid_points(t_end, h_first, GRID_MAX * math.sqrt(tol) / d.gamma, GRID_GROWTH * math.sqrt(tol))
    n += 2 * (conf.record.n_times + 1) + 1  # recorded times and t0, merged in
    # the expansion and the Volterra solve have their own budget, theory.memory_gb (theory/memory.py)
    est = Estimate(steps=est.steps, weights=est.weights, grid=n, memory_gb=est.memory_gb + 4 * 8.0 * n * est.points
                   / 1e9, points=est.points)
    if n > conf.limits.max_grid:
        _refuse(f"{n:.3g} theory grid points for P + Q = {est.points} points, grid × P² = {n * est.points ** 2:.3g} "
                f"(dynamics.t_max={t_end:g} at γ = T/σ² = {d.gamma:.3g}, theory.tol={tol:g}, first step "
                f"{h_first:.3g} from the NTK's largest eigenvalue, record.n_times={conf.record.n_times})",
                "limits.max_grid", conf.limits.max_grid)
    check_estimate(conf, est)
    return est
