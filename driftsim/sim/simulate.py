"""The simulator's driver (SPEC §8, §6.1): an ensemble trained by one of ``schemes.py``, the readout
frozen at t0 while the hidden weights drift, the predictors recorded, divergence checked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import DynamicsConfig, ModelConfig, ProtocolConfig, SimConfig
from ..prior import Prior
from ..results import SimPhase, SimResult, SimSessions
from ..times import check_times
from .networks import Ensemble, init_ensemble, resolve_device, resolve_dtype
from .noise import leave_a_core
from .schemes import euler, langevin, mpl, prior_drift, substeps

__all__ = ["simulate", "SessionRequest", "DIVERGENCE_LIMIT"]

DIVERGENCE_LIMIT = 1e6  # |f| beyond this (labels are ±1) counts as a diverged run
CHECK_EVERY = 16  # steps between divergence checks (each one synchronises a GPU)


def _generators(seed: int, device: torch.device) -> list[torch.Generator]:
    """Independent generators for initialisation, learning and drift: the learning run does not depend on
    whether a drift phase is asked for."""
    seeds = np.random.SeedSequence(seed).generate_state(3)
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


class _Recorder:
    """Preallocated CPU records of one phase: predictors and optional activity snapshots."""

    def __init__(self, t: Tensor, E: int, P: int, Q: int, units: int, dtype: torch.dtype):
        n = len(t)
        self.t, self.P, self.units = t, P, units
        self.f = torch.empty(n, E, P + Q, dtype=dtype)
        self.act = torch.empty(n, E, P + Q, units, dtype=dtype) if units else None

    def __call__(self, i: int, net: Ensemble, x_all: Tensor) -> Tensor:
        fw = net.forward(x_all)
        self.f[i] = fw.f.cpu()
        if self.act is not None:
            self.act[i] = fw.activity[:, :self.units, :].transpose(1, 2).cpu()
        return fw.f[:, :self.P]

    def phase(self) -> SimPhase:
        P = self.P
        act = (None, None) if self.act is None else (self.act[:, :, :P], self.act[:, :, P:])
        return SimPhase(self.t, self.f[:, :, :P], self.f[:, :, P:], *act)


@dataclass(frozen=True)
class SessionRequest:
    """Activity to record for the observation model: at drift times ``t`` [S] (since the freeze), of hidden
    layer ``layer`` (1..L), the first ``units`` units of the first ``networks`` networks."""
    t: Tensor
    layer: int
    networks: int
    units: int

    def recorder(self, x_all: Tensor, depth: int, ensemble: int, width: int, dtype: torch.dtype):
        """A callable (i, net) storing session i, and the SimSessions it fills; checks the request."""
        t = check_times("observe session times", self.t, from_zero=True)
        for name, value, top in (("observe.layer", self.layer, depth), ("observe.networks", self.networks, ensemble),
                                 ("observe cells (with turnover)", self.units, width)):
            if not 1 <= value <= top:
                raise ValueError(f"{name}={value} is not allowed: 1..{top} for this simulation")
        out = SimSessions(t, self.layer, torch.empty(len(t), self.networks, self.units, len(x_all), dtype=dtype))

        def record(i: int, net: Ensemble) -> None:
            act = net.forward(x_all).phi[self.layer - 1]  # [E, N, X]
            out.activity[i] = act[:self.networks, :self.units].cpu()
        return record, out


def _stability_hint(net: Ensemble, x: Tensor, prior: Prior) -> float:
    """Largest eigenvalue of the empirical NTK on the training set over the ensemble, at initialisation
    scaled to the prior's weight scale σ when that is larger (exact scaling for relu and linear φ)."""
    lam0 = float(torch.linalg.eigvalsh(net.ntk(x)).max())
    return lam0 * max(1.0, (prior.sigma / prior.sigma0) ** (2 * net.depth))


def _check_divergence(f: Tensor, t: float, dynamics: DynamicsConfig, lam_max: float) -> None:
    if bool((f.abs() <= DIVERGENCE_LIMIT).all()):  # NaN compares false
        return
    scheme, g = dynamics.scheme, dynamics.gamma
    what = (f"a network's training predictor became non-finite or exceeded {DIVERGENCE_LIMIT:g} at "
            f"t≈{t:.4g}; no results were returned. The empirical NTK on the training set has largest "
            f"eigenvalue λ_max≈{lam_max:.3g} (at initialisation, scaled to the prior's weight scale σ)")
    if scheme == "mpl":
        raise ValueError(f"dynamics.lam={dynamics.lam:g} (MPL step dt = 1/lam = {1 / dynamics.lam:g}) made the "
                         f"run diverge: {what}; choose dynamics.lam > {max(lam_max, g):.3g} (dt < 1/λ_max).")
    bound = 1 / lam_max if scheme == "langevin" else min(1 / lam_max, 1 / g)
    extra = "" if scheme == "langevin" else f" and dt < 1/γ = {1 / g:.3g} (Euler–Maruyama decay)"
    raise ValueError(f"dynamics.dt={dynamics.dt:g} made the {scheme} run diverge: {what}; choose "
                     f"dynamics.dt < {bound:.3g} (dt < 1/λ_max{extra}).")


@torch.no_grad()
def simulate(task, model: ModelConfig, dynamics: DynamicsConfig, protocol: ProtocolConfig, sim: SimConfig,
             t_learn: Tensor, t_drift: Optional[Tensor], seed: int, device: str = "auto", progress: bool = True,
             sessions: Optional[SessionRequest] = None) -> SimResult:
    """Simulate an ensemble of E networks (SPEC §8) on ``task`` and record their predictors.

    task: x_train [P, N0], y_train [P], x_test [Q, N0] (float64). Learning follows ``dynamics.scheme``
    (``langevin``, ``euler``: steps of at most dynamics.dt; ``mpl``: steps of at most 1/dynamics.lam) from
    t = 0 to the last of ``t_learn``, shortening steps so that every recorded time is hit exactly. With
    protocol.t0 set, the weights at t0 are copied and drift (SPEC §6.1) over ``t_drift`` (times since the
    freeze): ``freeze: readout`` keeps a(t0) and moves the hidden weights under the prior alone,
    ``freeze: none`` moves every weight so; exact OU transitions (MPL: the chain's own AR(1)), while the
    learning run goes on undisturbed. Returns float records on the CPU: learn.f_train [n, E, P], f_test
    [n, E, Q] (drift: [m, E, ·]), activity [n, E, P or Q, sim.activity_units] of the first units of the last
    hidden layer; info holds scheme, dt, steps, wall time, device, the NTK bound. Raises ValueError naming
    dynamics.dt (or lam) when the run diverges. ``sessions`` (a :class:`SessionRequest`, drift phase only)
    also records a layer's activity at its drift times into ``SimResult.sessions``: they become extra stops
    of the drift, whose exact transitions compose, so the drift keeps its law but draws other random numbers
    than a run without sessions.
    """
    start = time.perf_counter()
    t_learn = check_times("t_learn", t_learn, from_zero=True)
    t0 = protocol.t0
    if t0 is None and t_drift is not None:
        raise ValueError("t_drift was given but protocol.t0 is unset: there is no drift phase to record")
    if t0 is not None:
        if t_drift is None:
            raise ValueError(f"protocol.t0={t0:g} asks for a drift phase: pass its recorded times t_drift")
        t_drift = check_times("t_drift", t_drift, from_zero=True)
    if sim.activity_units > model.width:
        raise ValueError(f"sim.activity_units={sim.activity_units} exceeds model.width={model.width}")
    dev, dtype = resolve_device(device), resolve_dtype(sim.dtype)
    x, y, x_test = (torch.as_tensor(v).to(device=dev, dtype=dtype) for v in (task.x_train, task.y_train, task.x_test))
    x_all = torch.cat([x, x_test])
    P, Q = len(x), len(x_test)
    prior = Prior(dynamics.T, dynamics.sigma, dynamics.sigma0)
    g_init, g_learn, g_drift = _generators(seed, dev)
    net = init_ensemble(sim.ensemble, x.shape[1], model.width, model.depth, model.activation, prior.sigma0,
                        generator=g_init, dtype=dtype, antithetic=sim.antithetic)
    lam_max = _stability_hint(net, x, prior)
    if dynamics.scheme == "mpl":
        scheme, dt, drift_kind = mpl(x, y, prior, dynamics.mpl_inner_steps), 1 / dynamics.lam, "mpl"
    else:
        scheme, dt, drift_kind = {"langevin": langevin, "euler": euler}[dynamics.scheme](x, y, prior), dynamics.dt, "ou"
    drift = prior_drift(prior, drift_kind, dynamics.lam, readout=protocol.freeze == "none")

    stops = sorted(set(t_learn.tolist()) | ({float(t0)} if t0 is not None else set()))
    plan = [substeps(b - a, dt) for a, b in zip(stops[:-1], stops[1:])]
    index = {t: i for i, t in enumerate(t_learn.tolist())}
    units = sim.activity_units
    learn_rec = _Recorder(t_learn, sim.ensemble, P, Q, units, dtype)
    drift_rec = _Recorder(t_drift, sim.ensemble, P, Q, units, dtype) if t0 is not None else None
    if sessions is not None and t0 is None:
        raise ValueError("observe sessions lie in the drift phase, but protocol.t0 is unset (no drift phase)")
    record_session, session_out = (sessions.recorder(x_all, model.depth, sim.ensemble, model.width, dtype)
                                   if sessions is not None else (None, None))
    drift_stops = t_drift.tolist() if t0 is not None else []
    if sessions is not None:
        drift_stops = sorted(set(drift_stops) | set(session_out.t.tolist()))
    n_drift = max(len(drift_stops) - 1, 0)

    state = scheme.init(net, g_learn)
    steps = 0
    bar = tqdm(total=sum(n for n, _ in plan) + n_drift, unit="step", desc=f"sim {dynamics.scheme}",
               disable=not progress, dynamic_ncols=True)
    with state.noise, leave_a_core(state.noise), bar:
        for k, t_stop in enumerate(stops):
            if k > 0:
                n, h = plan[k - 1]
                for i in range(n):
                    scheme.step(state, h)
                    if i % CHECK_EVERY == CHECK_EVERY - 1:
                        _check_divergence(state.f_train, state.t, dynamics, lam_max)
                bar.update(n)
                steps += n
                state.t = t_stop  # the sum of the steps lands here up to rounding
            if t_stop in index:
                _check_divergence(learn_rec(index[t_stop], state.net, x_all), t_stop, dynamics, lam_max)
            elif k > 0:
                _check_divergence(state.net.forward(x).f, t_stop, dynamics, lam_max)
            if t0 is not None and t_stop == t0:
                dstate = drift.init(state.net.clone(), g_drift)
                at_record = {t: i for i, t in enumerate(t_drift.tolist())}
                at_session = {t: i for i, t in enumerate(session_out.t.tolist())} if sessions is not None else {}
                for k_d, t_d in enumerate(drift_stops):
                    if k_d > 0:
                        drift.step(dstate, t_d - drift_stops[k_d - 1])
                        bar.update(1)
                    if t_d in at_record:
                        drift_rec(at_record[t_d], dstate.net, x_all)
                    if t_d in at_session:
                        record_session(at_session[t_d], dstate.net)
                del dstate

    info = {"scheme": dynamics.scheme, "dt": dt, "steps": steps, "drift_transitions": n_drift,
            "wall_time_s": time.perf_counter() - start, "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
            "antithetic": sim.antithetic, "ntk_max_eig": lam_max}
    if dynamics.scheme == "mpl":
        proposed = state.stats.get("proposed", 0)
        info.update(lam=dynamics.lam, mpl_inner_steps=dynamics.mpl_inner_steps,
                    mpl_acceptance=state.stats.get("accepted", 0) / proposed if proposed else float("nan"))
    return SimResult(learn_rec.phase(), drift_rec.phase() if drift_rec is not None else None,
                     float(t0) if t0 is not None else None, info, session_out)
