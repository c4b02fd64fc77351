"""The simulator's driver (SPEC §8, §6.1): an ensemble trained by one of ``schemes.py`` in chunks of networks
(sim.chunk, each from its own seeds), the readout frozen at t0 while the hidden weights drift, the predictors
recorded, divergence checked.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import Activation
from ..prior import Prior
from ..results import SimPhase, SimResult, SimSessions
from ..times import check_times
from ..validation import (check_activity_units, check_chunk, check_depth, check_ensemble, check_freeze, check_inputs,
                          check_labels, check_proximity, check_scales, check_seed, choice, integer, positive)
from .networks import Ensemble, init_ensemble, resolve_device, resolve_dtype
from .noise import leave_a_core
from .schemes import SCHEMES, euler, langevin, mpl, prior_drift, substeps

__all__ = ["simulate", "SessionRequest", "DIVERGENCE_LIMIT", "FREEZES"]

FREEZES = ("readout", "none")  # protocol.freeze: what stops moving at t0 (none: the control of SPEC §8)

DIVERGENCE_LIMIT = 1e6  # |f| beyond this (labels are ±1) counts as a diverged run
CHECK_EVERY = 16  # steps between divergence checks (each one synchronises a GPU)


def _generators(seed: int, device: torch.device, chunk: int = 0) -> list[torch.Generator]:
    """Independent generators for initialisation, learning and drift of chunk ``chunk`` of the ensemble: the
    learning run does not depend on whether a drift phase is asked for. Chunk 0 draws from
    ``SeedSequence(seed)`` (an ensemble within one chunk is the run of before chunking), chunk c >= 1 from
    ``SeedSequence(seed, spawn_key=(c,))``, numpy's c-th child of it: streams apart from every other chunk's and
    seed's (unlike ``SeedSequence([seed, c])``, which equals ``SeedSequence(seed + c·2**32)`` and, through zero
    padding, ``SeedSequence([seed, c, 0])``)."""
    root = np.random.SeedSequence(seed, spawn_key=(chunk,) if chunk else ())
    return [torch.Generator(device=device).manual_seed(int(s)) for s in root.generate_state(3)]


class _Recorder:
    """The records of one phase: predictors f_train [n, E, P], f_test [n, E, Q] and optional activity
    snapshots train [n, E, P, U], test [n, E, Q, U], each a CPU tensor or a dataset of an h5py group (the
    run's spool: memory then holds one chunk's slice of one time, never the ensemble's records)."""

    def __init__(self, t: Tensor, P: int, arrays: dict, lo: int = 0, hi: Optional[int] = None):
        self.t, self.P, self.arrays, self.lo, self.hi = t, P, arrays, lo, hi
        self.units = arrays["act_train"].shape[-1] if "act_train" in arrays else 0

    @classmethod
    def empty(cls, t: Tensor, E: int, P: int, Q: int, units: int, dtype: torch.dtype,
              group=None) -> "_Recorder":
        """Records for E networks, in memory, or as datasets of the h5py ``group`` when one is given."""
        n = len(t)
        shapes = {"f_train": (n, E, P), "f_test": (n, E, Q)}
        if units:
            shapes.update(act_train=(n, E, P, units), act_test=(n, E, Q, units))
        if group is None:
            return cls(t, P, {k: torch.empty(shape, dtype=dtype) for k, shape in shapes.items()})
        # contiguous and uncompressed: a chunk's slice of one time is one plain write; the run file compresses
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        return cls(t, P, {k: group.create_dataset(k, shape=shape, dtype=np_dtype) for k, shape in shapes.items()})

    def part(self, lo: int, hi: int) -> "_Recorder":
        """The recorder of networks lo..hi−1 (one chunk): it writes into these records' slice."""
        return _Recorder(self.t, self.P, self.arrays, lo, hi)

    def _write(self, name: str, i: int, value: Tensor) -> None:
        target = self.arrays[name]
        target[i, self.lo:self.hi] = value.cpu() if isinstance(target, Tensor) else value.cpu().numpy()

    def __call__(self, i: int, net: Ensemble, x_all: Tensor) -> Tensor:
        fw = net.forward(x_all)
        P = self.P
        self._write("f_train", i, fw.f[:, :P])
        self._write("f_test", i, fw.f[:, P:])
        if self.units:
            act = fw.activity[:, :self.units, :].transpose(1, 2)  # [E, P+Q, U]
            self._write("act_train", i, act[:, :P])
            self._write("act_test", i, act[:, P:])
        return fw.f[:, :P]

    def phase(self) -> SimPhase:
        a = self.arrays
        return SimPhase(self.t, a["f_train"], a["f_test"], a.get("act_train"), a.get("act_test"))


@dataclass(frozen=True)
class SessionRequest:
    """Activity to record for the observation model: at drift times ``t`` [S] (since the freeze), of hidden
    layer ``layer`` (1..L), the first ``units`` units of the first ``networks`` networks."""
    t: Tensor
    layer: int
    networks: int
    units: int

    def recorder(self, x_all: Tensor, depth: int, ensemble: int, width: int, dtype: torch.dtype):
        """A callable (i, net, first) storing session i of the ensemble ``net`` whose first network is network
        ``first`` of the whole (a chunk's), and the SimSessions it fills; checks the request."""
        t = check_times("observe session times", self.t, from_zero=True)
        for name, value, top in (("observe.layer", self.layer, depth), ("observe.networks", self.networks, ensemble),
                                 ("observe cells (with turnover)", self.units, width)):
            if not 1 <= value <= top:
                raise ValueError(f"{name}={value} is not allowed: 1..{top} for this simulation")
        out = SimSessions(t, self.layer, torch.empty(len(t), self.networks, self.units, len(x_all), dtype=dtype))

        def record(i: int, net: Ensemble, first: int) -> None:
            take = min(self.networks - first, net.size)  # observed networks in this chunk
            if take > 0:
                act = net.forward(x_all).phi[self.layer - 1]  # [E, N, X]
                out.activity[i, first:first + take] = act[:take, :self.units].cpu()
        return record, out


def _stability_hint(net: Ensemble, x: Tensor, prior: Prior) -> float:
    """Largest eigenvalue of the empirical NTK on the training set over the ensemble, at initialisation
    scaled to the prior's weight scale σ when that is larger (exact scaling for relu and linear φ)."""
    lam0 = float(torch.linalg.eigvalsh(net.ntk(x)).max())
    return lam0 * max(1.0, (prior.sigma / prior.sigma0) ** (2 * net.depth))


def _check_divergence(f: Tensor, t: float, scheme: str, dt: float, lam: float, gamma: float, lam_max: float) -> None:
    """Raise a ValueError naming dynamics.dt (MPL: dynamics.lam = 1/dt) and a stable choice when a training
    predictor in ``f`` is non-finite or beyond DIVERGENCE_LIMIT."""
    if bool((f.abs() <= DIVERGENCE_LIMIT).all()):  # NaN compares false
        return
    what = (f"a network's training predictor became non-finite or exceeded {DIVERGENCE_LIMIT:g} at "
            f"t≈{t:.4g}; no results were returned. The empirical NTK on the training set has largest "
            f"eigenvalue λ_max≈{lam_max:.3g} (at initialisation, scaled to the prior's weight scale σ)")
    if scheme == "mpl":
        raise ValueError(f"dynamics.lam={lam:g} (MPL step dt = 1/lam = {dt:g}) made the run diverge: "
                         f"{what}; choose dynamics.lam > {max(lam_max, gamma):.3g} (dt < 1/λ_max).")
    bound = 1 / lam_max if scheme == "langevin" else min(1 / lam_max, 1 / gamma)
    extra = "" if scheme == "langevin" else f" and dt < 1/γ = {1 / gamma:.3g} (Euler–Maruyama decay)"
    raise ValueError(f"dynamics.dt={dt:g} made the {scheme} run diverge: {what}; choose "
                     f"dynamics.dt < {bound:.3g} (dt < 1/λ_max{extra}).")


@torch.no_grad()
def simulate(x_train: Tensor, y_train: Tensor, x_test: Tensor, *, depth: int, activation: Union[str, Activation],
             width: int, prior: Prior, t_learn: Tensor, t0: Optional[float] = None,
             t_drift: Optional[Tensor] = None, freeze: str = "readout", scheme: str = "langevin",
             dt: float = 0.01, lam: float = 100.0, mpl_inner_steps: int = 2, ensemble: int = 64,
             dtype: str = "float32", antithetic: bool = False, activity_units: int = 0, chunk: int = 1024,
             seed: int = 0, device: str = "auto", progress: bool = True,
             sessions: Optional[SessionRequest] = None, records=None) -> SimResult:
    """Simulate an ensemble of networks (SPEC §8) and record their predictors over learning and drift.

    E = ``ensemble`` networks of SPEC §1.1 (depth, activation, width N), initialised i.i.d. N(0, σ0²),
    learn by ``scheme`` from t = 0 to the last of ``t_learn`` (steps shortened so that every recorded time
    is hit exactly). With ``t0`` set, the weights at t0 are copied and drift (SPEC §6.1) over ``t_drift``:
    ``freeze="readout"`` keeps a(t0) and moves the hidden weights under the prior alone, ``"none"`` moves
    every weight so; exact OU transitions (MPL: the chain's own AR(1)), while the learning run goes on
    undisturbed.

    The networks run in consecutive chunks of at most ``chunk`` (networks 0..chunk−1, then the next chunk),
    each a whole simulation of its networks that writes its slice of the preallocated records, so that
    memory for the weights and activations is bounded by the chunk; the records hold the whole ensemble, in
    memory, or streamed to the datasets of ``records`` (an h5py group) a chunk's slice at a time.
    Chunk c draws from its own seeds (``_generators``): chunk 0 from ``SeedSequence(seed)``, as a run
    without chunks, chunk c >= 1 from ``SeedSequence(seed, spawn_key=(c,))``. The results depend on seed,
    ensemble and chunk alone, never on the machine; with E <= chunk there is one chunk, the run of before chunking.

    Parameters
    ----------
    x_train, y_train, x_test : Tensor
        Training inputs [P, N0], labels [P], test inputs [Q, N0] (any float dtype; cast to ``dtype``).
    depth, activation, width : int, str or Activation, int
        Architecture: hidden layers L (model.depth), φ (model.activation), hidden width N (model.width).
    prior : Prior
        T, σ and σ0 of SPEC §1.2, §2.
    t_learn : Tensor
        Recorded times of learning [n], strictly increasing from 0.
    t0 : float, optional
        Time of the freeze (protocol.t0) in [0, t_learn[-1]]; None: no drift phase.
    t_drift : Tensor, optional
        Recorded times since the freeze [m], strictly increasing from 0; given exactly when t0 is.
    freeze : str
        ``"readout"`` or ``"none"`` (protocol.freeze).
    scheme : str
        ``"langevin"`` (exact prior part), ``"euler"`` (Euler–Maruyama): steps of at most ``dt``;
        ``"mpl"``: proximal steps of 1/``lam`` with ``mpl_inner_steps`` MALA sweeps (dynamics.*).
    dt, lam, mpl_inner_steps : float, float, int
        dynamics.dt, dynamics.lam, dynamics.mpl_inner_steps.
    ensemble, dtype, antithetic, activity_units, chunk : int, str, bool, int, int
        sim.*: networks E, ``"float32"`` or ``"float64"``, antithetic pairs (E even), hidden units of the
        last layer snapshotted per network (0: none, at most ``width``), networks simulated at once (even
        when antithetic, so that a pair stays in one chunk).
    seed : int
        Seeds initialisation, learning and drift with independent streams (the learning run does not depend
        on whether a drift phase is asked for), and every chunk apart.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show a progress bar over all chunks' steps (with its ETA).
    sessions : SessionRequest, optional
        Drift phase only: also record a layer's activity at its drift times into
        ``SimResult.sessions``. They become extra stops of the drift (in every chunk), whose exact transitions
        compose, so the drift keeps its law but draws other random numbers than a run without sessions.
    records : h5py.Group, optional
        Where the predictors and activity snapshots go: datasets ``learn/f_train``, ``learn/f_test``,
        ``learn/act_train``, ``learn/act_test`` (and ``drift/…``) created in it, each time's chunk slice written
        as it is recorded (the app's scratch file, driftsim.io.output.scratch); default: CPU tensors.

    Returns
    -------
    SimResult
        Records in ``dtype`` (CPU tensors, or the datasets of ``records``, which stay open as long as
        its file): learn.f_train [n, E, P], learn.f_test [n, E, Q] (drift: [m, E, ·]),
        activity [n, E, P or Q, activity_units]; ``info`` holds scheme, dt, steps (of one chunk's run), chunks,
        wall time, device, dtype, antithetic, the NTK bound ntk_max_eig (the largest of the chunks'), and for
        MPL lam, mpl_inner_steps, mpl_acceptance (over all chunks).

    Raises
    ------
    ValueError
        For an argument outside its range (naming its config key), or when the run diverges (naming
        dynamics.dt or dynamics.lam and a stable choice).
    """
    start = time.perf_counter()
    x_train = check_inputs("x_train", x_train)
    x_test = check_inputs("x_test", x_test, dim=x_train.shape[1])
    y_train = check_labels(y_train, x_train.shape[0])
    t_learn = check_times("t_learn", t_learn, from_zero=True)
    check_freeze(t0, t_drift, float(t_learn[-1]))
    if t0 is not None:
        t_drift = check_times("t_drift", t_drift, from_zero=True)
    choice("protocol.freeze", freeze, FREEZES)
    choice("dynamics.scheme", scheme, SCHEMES)
    dt = 1 / positive("dynamics.lam", lam) if scheme == "mpl" else positive("dynamics.dt", dt)
    integer("dynamics.mpl_inner_steps", mpl_inner_steps, 0)
    units = check_activity_units(activity_units, integer("model.width", width, 1))
    check_scales(prior.T, prior.sigma, prior.sigma0, check_depth(depth))
    check_seed(seed)
    check_ensemble(ensemble, antithetic)
    check_chunk(chunk, antithetic)
    dev, dtype = resolve_device(device), resolve_dtype(dtype)
    x, y, x_test = (v.to(device=dev, dtype=dtype) for v in (x_train, y_train, x_test))
    x_all = torch.cat([x, x_test])
    P, Q = len(x), len(x_test)
    if scheme == "mpl":
        learning, drift_kind = mpl(x, y, prior, mpl_inner_steps), "mpl"
    else:
        learning, drift_kind = {"langevin": langevin, "euler": euler}[scheme](x, y, prior), "ou"
    drift = prior_drift(prior, drift_kind, lam, readout=freeze == "none")

    stops = sorted(set(t_learn.tolist()) | ({float(t0)} if t0 is not None else set()))
    plan = [substeps(b - a, dt) for a, b in zip(stops[:-1], stops[1:])]
    index = {t: i for i, t in enumerate(t_learn.tolist())}
    spool = {name: records.create_group(name) if records is not None else None for name in ("learn", "drift")}
    learn_rec = _Recorder.empty(t_learn, ensemble, P, Q, units, dtype, spool["learn"])
    drift_rec = _Recorder.empty(t_drift, ensemble, P, Q, units, dtype, spool["drift"]) if t0 is not None else None
    if sessions is not None and t0 is None:
        raise ValueError("observe sessions lie in the drift phase, but protocol.t0 is unset (no drift phase)")
    record_session, session_out = (sessions.recorder(x_all, depth, ensemble, width, dtype)
                                   if sessions is not None else (None, None))
    drift_stops = t_drift.tolist() if t0 is not None else []
    if sessions is not None:
        drift_stops = sorted(set(drift_stops) | set(session_out.t.tolist()))
    at_record = {t: i for i, t in enumerate(t_drift.tolist())} if t0 is not None else {}
    at_session = {t: i for i, t in enumerate(session_out.t.tolist())} if sessions is not None else {}
    n_drift = max(len(drift_stops) - 1, 0)
    steps = sum(n for n, _ in plan)
    firsts = range(0, ensemble, chunk)  # each chunk's first network
    # one bar over every chunk's steps, so that its ETA is the whole run's
    bar = tqdm(total=(steps + n_drift) * len(firsts), unit="step", disable=not progress, dynamic_ncols=True,
               desc=f"sim {scheme}" + (f", {len(firsts)} chunks of {chunk}" if len(firsts) > 1 else ""))

    def run_chunk(c: int, lo: int, hi: int) -> tuple[float, dict]:
        """Simulate networks lo..hi−1 from chunk c's seeds into the records; their NTK hint and scheme stats."""
        g_init, g_learn, g_drift = _generators(seed, dev, c)
        net = init_ensemble(hi - lo, x.shape[1], width, depth, activation, prior.sigma0, generator=g_init,
                            dtype=dtype, antithetic=antithetic)
        lam_max = _stability_hint(net, x, prior)
        if scheme == "mpl":
            check_proximity(lam, prior.gamma, lam_max)

        def check(f: Tensor, t: float) -> None:
            _check_divergence(f, t, scheme, dt, lam, prior.gamma, lam_max)

        learn_part = learn_rec.part(lo, hi)
        drift_part = drift_rec.part(lo, hi) if drift_rec is not None else None
        state = learning.init(net, g_learn)
        with state.noise, leave_a_core(state.noise):
            for k, t_stop in enumerate(stops):
                if k > 0:
                    n, h = plan[k - 1]
                    for i in range(n):
                        learning.step(state, h)
                        if i % CHECK_EVERY == CHECK_EVERY - 1:
                            check(state.f_train, state.t)
                    bar.update(n)
                    state.t = t_stop  # the sum of the steps lands here up to rounding
                if t_stop in index:
                    check(learn_part(index[t_stop], state.net, x_all), t_stop)
                elif k > 0:
                    check(state.net.forward(x).f, t_stop)
                if t0 is not None and t_stop == t0:
                    dstate = drift.init(state.net.clone(), g_drift)
                    for k_d, t_d in enumerate(drift_stops):
                        if k_d > 0:
                            drift.step(dstate, t_d - drift_stops[k_d - 1])
                            bar.update(1)
                        if t_d in at_record:
                            drift_part(at_record[t_d], dstate.net, x_all)
                        if t_d in at_session:
                            record_session(at_session[t_d], dstate.net, lo)
                    del dstate
        return lam_max, state.stats

    hints, stats = [], Counter()  # the chunks' NTK hints; scheme stats summed over the chunks
    with bar:
        for c, lo in enumerate(firsts):
            lam_max, chunk_stats = run_chunk(c, lo, min(lo + chunk, ensemble))
            hints.append(lam_max)
            stats.update(chunk_stats)

    info = {"scheme": scheme, "dt": dt, "steps": steps, "drift_transitions": n_drift, "chunks": len(firsts),
            "wall_time_s": time.perf_counter() - start, "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
            "antithetic": antithetic, "ntk_max_eig": max(hints)}
    if scheme == "mpl":
        proposed = stats.get("proposed", 0)
        info.update(lam=lam, mpl_inner_steps=mpl_inner_steps,
                    mpl_acceptance=stats.get("accepted", 0) / proposed if proposed else float("nan"))
    return SimResult(learn_rec.phase(), drift_rec.phase() if drift_rec is not None else None,
                     float(t0) if t0 is not None else None, info, session_out)
