"""Langevin and Markov-proximal simulation of network ensembles (SPEC §1.3, §1.4, §6.1, §8).

Schemes are (init, step) pairs sharing one :class:`State` (the ensemble's weights, the time, the noise
source and its generator); they differ only in ``step(state, h)``, which advances the time by h in place.
Recording and the readout-freezing protocol live outside the schemes, in :func:`simulate` (STYLE.md, jax-md).

- ``langevin``: split scheme with an exact prior part, Θ ← e^(−γh)Θ − h∇L + sqrt(σ²(1 − e^(−2γh))) ξ
  (L the squared loss, γ = T/σ²), stable for any γh;
- ``euler``: Euler–Maruyama, Θ ← Θ − h∇E + sqrt(2Th) ξ;
- ``mpl``: one step samples the proximal transition density of SPEC §1.3 with λ = 1/h (see :func:`mpl`);
- ``prior_drift``: decay and noise alone (SPEC §2), exact over any interval: the drift phase of §6.1.

Times are those of SPEC §1.4. Shapes: E networks, N units, N0 inputs, P training and Q test points.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import DynamicsConfig, ModelConfig, ProtocolConfig, SimConfig
from .networks import Ensemble, Forward, init_ensemble, resolve_device, resolve_dtype
from .prior import Prior
from .results import SimPhase, SimResult
from .times import check_times

__all__ = ["Noise", "State", "Scheme", "prior_coefficients", "langevin", "euler", "mpl", "mpl_readout_draw",
           "prior_drift", "leave_a_core", "simulate", "DIVERGENCE_LIMIT"]

DIVERGENCE_LIMIT = 1e6  # |f| beyond this (labels are ±1) counts as a diverged run
CHECK_EVERY = 16  # steps between divergence checks (each one synchronises a GPU)


class Noise:
    """Standard Gaussian draws ξ from one seeded generator, with the antithetic pairing of ``networks.py``.

    A draw has one value per independent network. In an antithetic ensemble networks 2k, 2k+1 receive the
    same value for hidden-layer quantities and opposite values for readout quantities (``flip=True``), and
    share Metropolis uniforms; this keeps the pair antithetic in law while each network alone is exact.

    ``prefetch`` (CPU): a worker thread draws the next ``add_params_`` noise while the caller computes the
    next gradient (torch's CPU sampler is single-threaded and the largest cost of a step). The draws come
    from the generator in the same order, so results are identical with and without it.
    """

    def __init__(self, antithetic: bool, generator: torch.Generator, prefetch: bool = False):
        self.group = 2 if antithetic else 1
        self.generator = generator
        self._buffers: dict[tuple, tuple[Tensor, Tensor]] = {}  # reused: no allocation in the hot loop
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="driftsim-noise") if prefetch else None
        self._sets: list[list[tuple[Tensor, Tensor]]] = []  # two sets of prefetch buffers
        self._signature: list[tuple] = []
        self._pending: Optional[Future] = None

    @property
    def prefetching(self) -> bool:
        return self._worker is not None

    def _pairs(self, t: Tensor) -> Tensor:
        return t.view(t.shape[0] // self.group, self.group, *t.shape[1:])

    def _alloc(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(contiguous buffer, its view [E/group, 1, ...]) with the memory order of ``like``'s strides, so that
        filling is the vectorised sampler (contiguous only) and adding is one streaming pass."""
        pairs = self._pairs(like)
        order = sorted(range(pairs.dim()), key=lambda d: -pairs.stride(d))  # outermost dimension first
        shape = (pairs.shape[0], 1, *pairs.shape[2:])
        buf = torch.empty([shape[d] for d in order], dtype=like.dtype, device=like.device)
        return buf, buf.permute([order.index(d) for d in range(len(order))])

    def _fill(self, bufs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        for buf, _ in bufs:
            buf.normal_(generator=self.generator)
        return [view for _, view in bufs]

    def _sync(self) -> None:
        """Wait for the worker, so that the generator has one user at a time."""
        if self._pending is not None:
            self._pending.result()

    def normal(self, like: Tensor) -> Tensor:
        """Fresh ξ for a tensor shaped like ``like`` [E, ...]: a reused buffer [E/group, 1, ...]."""
        self._sync()
        key = (like.shape, like.stride(), like.dtype, like.device)
        if key not in self._buffers:
            self._buffers[key] = self._alloc(like)
        return self._fill([self._buffers[key]])[0]

    @staticmethod
    def _add(pairs: Tensor, xi: Tensor, std: float, flip: bool) -> None:
        if flip and pairs.shape[1] == 2:
            pairs[:, :1].add_(xi, alpha=std)
            pairs[:, 1:].add_(xi, alpha=-std)
        else:
            pairs.add_(xi, alpha=std)

    def add_(self, t: Tensor, std: float, flip: bool = False) -> Tensor:
        """t ← t + std·ξ in place (t [E, ...]); ``flip``: the partner of an antithetic pair gets −ξ."""
        self._add(self._pairs(t), self.normal(t), std, flip)
        return t

    def add_params_(self, params: list[Optional[Tensor]], std: float) -> None:
        """Θ ← Θ + std·ξ for weights laid out like ``Ensemble.params`` (readout last, flipped); None: skipped."""
        live = [(i == len(params) - 1, p) for i, p in enumerate(params) if p is not None]
        if self._worker is None:
            for flip, p in live:
                self.add_(p, std, flip)
            return
        signature = [(p.shape, p.stride()) for _, p in live]
        if not self._sets:  # first call: both sets allocated, the first drawn now
            self._sets = [[self._alloc(p) for _, p in live] for _ in range(2)]
            self._signature = signature
            self._pending = self._worker.submit(self._fill, self._sets[0])
        if signature != self._signature:
            raise RuntimeError("a prefetching Noise serves one fixed list of weight tensors")
        xis = self._pending.result()
        self._sets.reverse()
        self._pending = self._worker.submit(self._fill, self._sets[0])  # the next step's noise, meanwhile
        for (flip, p), xi in zip(live, xis):
            self._add(self._pairs(p), xi, std, flip)

    def uniform(self, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """U(0, 1) [size], shared within antithetic pairs."""
        self._sync()
        u = torch.rand(size // self.group, 1, dtype=dtype, device=device, generator=self.generator)
        return u.expand(-1, self.group).reshape(size)

    def close(self) -> None:
        """Stop the prefetch worker (if any)."""
        if self._worker is not None:
            self._sync()
            self._worker.shutdown()
            self._worker = None

    def __enter__(self) -> "Noise":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class State:
    """What every scheme advances: the weights, the time, the noise source (with its generator)."""
    net: Ensemble
    t: float
    noise: Noise
    f_train: Optional[Tensor] = None  # [E, P] training predictor at the last evaluation (divergence checks)
    stats: dict = field(default_factory=dict)  # scheme diagnostics, e.g. MPL acceptance counts


class Scheme(NamedTuple):
    """(init, step): ``init(net, generator, t=0.0) -> State``; ``step(state, h) -> state`` advances by h."""
    init: Callable[..., State]
    step: Callable[[State, float], State]


def init_state(net: Ensemble, generator: torch.Generator, t: float = 0.0, prefetch: bool = False) -> State:
    """The state every scheme starts from; ``generator`` must live on the ensemble's device."""
    return State(net, float(t), Noise(net.antithetic, generator, prefetch))


def prior_coefficients(kind: str, prior: Prior, h: float) -> tuple[float, float]:
    """(decay, std) of one step θ ← decay·θ + std·ξ of the prior part dθ = −γθ dt + sqrt(2T) dB over h.

    ``ou``: exact, SPEC §2 (e^(−γh), sqrt(σ²(1 − e^(−2γh)))), the same transition as ``Prior.transition``;
    ``euler``: Euler–Maruyama (1 − γh, sqrt(2Th)); ``mpl``: the proximal AR(1) of SPEC §1.3 with λ = 1/h,
    (κ, sqrt(v)) = (1/(1 + γh), sqrt(2Th/(1 + γh))).
    """
    g, T = prior.gamma, prior.T
    if kind == "ou":
        return prior.coefficients(h)
    if kind == "euler":
        return 1 - g * h, math.sqrt(2 * T * h)
    if kind == "mpl":
        return 1 / (1 + g * h), math.sqrt(2 * T * h / (1 + g * h))
    raise ValueError(f"unknown prior discretisation {kind!r}; one of ['ou', 'euler', 'mpl']")


def _gradient_scheme(x: Tensor, y: Tensor, prior: Prior, kind: str) -> Scheme:
    def step(state: State, h: float) -> State:
        decay, std = prior_coefficients(kind, prior, h)
        net = state.net
        fw = net.forward(x)
        r = fw.f - y
        # Θ ← decay·Θ − h∇L: one fused GEMM per weight tensor, no gradient buffer
        net.accumulate_(net.params, fw, net.backward(fw, r), r, alpha=-h, beta=decay)
        state.noise.add_params_(net.params, std)
        state.f_train, state.t = fw.f, state.t + h
        return state

    def init(net: Ensemble, generator: torch.Generator, t: float = 0.0) -> State:
        return init_state(net, generator, t, prefetch=generator.device.type == "cpu")

    return Scheme(init, step)


def langevin(x: Tensor, y: Tensor, prior: Prior) -> Scheme:
    """SPEC §8 split scheme: Θ ← e^(−γh)Θ − h∇L(Θ) + sqrt(σ²(1 − e^(−2γh))) ξ, weak order 1.

    x [P, N0], y [P] in the ensemble's dtype and device; L = 1/2 Σ_μ (f_μ − y_μ)².
    """
    return _gradient_scheme(x, y, prior, "ou")


def euler(x: Tensor, y: Tensor, prior: Prior) -> Scheme:
    """SPEC §8 Euler–Maruyama: Θ ← Θ − h∇E(Θ) + sqrt(2Th) ξ, E the cost of §1.2; x [P, N0], y [P]."""
    return _gradient_scheme(x, y, prior, "euler")


def mpl_readout_draw(activity: Tensor, y: Tensor, a_prev: Tensor, lam: float, prior: Prior,
                     noise: Noise) -> Tensor:
    """Exact draw of the readout from the MPL transition density (SPEC §1.3) given the hidden weights.

    With B = φ(h_L)/sqrt(N) [E, N, P] (``activity`` = φ(h_L)) the cost is quadratic in a, and
    exp{−(β/2)[1/2||Bᵀa − y||² + (γ/2)||a||² + (λ/2)||a − a_prev||²]} is the Gaussian
    N(A⁻¹(By + λ a_prev), 2T A⁻¹), A = c I + BBᵀ, c = λ + γ. Drawn as A⁻¹(B(y + sqrt(2T) η) + λ a_prev
    + sqrt(2Tc) ξ) (covariance 2T A⁻¹(cI + BBᵀ)A⁻¹ = 2T A⁻¹), A⁻¹ by Woodbury with a P×P Cholesky
    factor.
    y [P], a_prev [E, N] → a [E, N].
    """
    E, N, P = activity.shape
    T, c = prior.T, lam + prior.gamma
    b = activity / math.sqrt(N)
    target = noise.add_(y.expand(E, P).clone(), math.sqrt(2 * T), flip=True)
    u = torch.bmm(b, target.unsqueeze(2)).squeeze(2).add_(a_prev, alpha=lam)
    noise.add_(u, math.sqrt(2 * T * c), flip=True)
    s = torch.bmm(b.transpose(1, 2), b)
    s.diagonal(dim1=1, dim2=2).add_(c)
    z = torch.cholesky_solve(torch.bmm(b.transpose(1, 2), u.unsqueeze(2)), torch.linalg.cholesky(s))
    return u.sub_(torch.bmm(b, z).squeeze(2)).div_(c)


def _dot(u: list[Tensor], v: list[Tensor]) -> Tensor:
    """Σ over weight tensors of the per-network inner products: [E]."""
    return sum((a * b).flatten(1).sum(1) for a, b in zip(u, v))


def mpl(x: Tensor, y: Tensor, prior: Prior, inner_steps: int = 2) -> Scheme:
    """SPEC §1.3 Markov proximal learning: a step of size h samples, with λ = 1/h and β = 1/T,

        p(Θ | Θ_p) ∝ exp{−(β/2)[E(Θ) + (λ/2)||Θ − Θ_p||²]} ∝ N(Θ; κΘ_p, v I) exp{−(β/2) L(Θ)},

    κ = 1/(1 + γ/λ), v = 2T/(λ + γ) (the prior-only AR(1) of §1.3). Sampler (Gibbs over blocks):
    1. hidden weights from the first-order draw W ← κW_p − ∇_W L(Θ_p)/c + sqrt(v) ξ, c = λ + γ
       (the large-λ step of §1.3);
    2. the readout exactly from its Gaussian conditional (:func:`mpl_readout_draw`);
    3. ``inner_steps`` times: one Metropolis-adjusted Langevin (MALA) move of the hidden weights given the
       readout, with proposal W' ~ N(κW_p − ∇_W L(W)/c, v I) (exact for the Gaussian part, so acceptance
       → 1 as λ grows), then step 2 again.
    Steps 2–3 leave the transition density invariant, so more inner steps only remove the O(λ⁻²) error of
    step 1. ``state.stats`` counts MALA proposals and acceptances. x [P, N0], y [P].
    """
    T, gamma = prior.T, prior.gamma

    def step(state: State, h: float) -> State:
        net, noise = state.net, state.noise
        lam = 1 / h
        c = lam + gamma
        kappa, sd = lam / c, math.sqrt(2 * T / c)
        w_prev, a_prev = [w.clone() for w in net.hidden], net.readout.clone()
        fw = net.forward(x)
        r = fw.f - y
        state.f_train = fw.f
        net.accumulate_([*net.hidden, None], fw, net.backward(fw, r), r, alpha=-1 / c, beta=kappa)
        noise.add_params_([*net.hidden, None], sd)
        fw = net.forward(x)
        net.readout.copy_(mpl_readout_draw(fw.activity, y, a_prev, lam, prior, noise))
        for _ in range(inner_steps):
            fw = _mala_hidden(state, fw, y, w_prev, kappa, c)
            net.readout.copy_(mpl_readout_draw(fw.activity, y, a_prev, lam, prior, noise))
        state.t += h
        return state

    def _mala_hidden(state: State, fw: Forward, y: Tensor, w_prev: list[Tensor], kappa: float, c: float) -> Forward:
        net, noise = state.net, state.noise
        sd = math.sqrt(2 * T / c)

        def loss_grad(n: Ensemble, fw: Forward) -> tuple[Tensor, list[Tensor]]:
            r = fw.f - y
            g = n.accumulate_([torch.empty_like(w) for w in n.hidden] + [None], fw, n.backward(fw, r), r, 1.0, 0.0)
            return 0.5 * (r * r).sum(1), g[:-1]

        fw.f = net.head(fw.activity)  # the readout has moved since this forward pass
        loss, g = loss_grad(net, fw)
        prop = [torch.mul(wp, kappa).add_(gi, alpha=-1 / c) for wp, gi in zip(w_prev, g)]
        noise.add_params_([*prop, None], sd)
        pnet = net.with_hidden(prop)
        pfw = pnet.forward(x)
        ploss, pg = loss_grad(pnet, pfw)
        # log acceptance of the move W → W' for the proposal above (m = κW_p):
        # −(β/2)[L' − L + (W − m)·g' − (W' − m)·g + (|g'|² − |g|²)/(2c)]
        centre = [wp * kappa for wp in w_prev]
        cross = (_dot([w - m for w, m in zip(net.hidden, centre)], pg)
                 - _dot([w - m for w, m in zip(prop, centre)], g))
        log_alpha = -(ploss - loss + cross + (_dot(pg, pg) - _dot(g, g)) / (2 * c)) / (2 * T)
        accept = noise.uniform(net.size, log_alpha.dtype, log_alpha.device).log() < log_alpha  # NaN: reject
        for w, w_new in zip(net.hidden, prop):
            torch.where(accept.view(-1, 1, 1), w_new, w, out=w)
        pick = lambda new, old: torch.where(accept.view(-1, *([1] * (new.dim() - 1))), new, old)  # noqa: E731
        state.stats["proposed"] = state.stats.get("proposed", 0) + net.size
        state.stats["accepted"] = state.stats.get("accepted", 0) + int(accept.sum())
        return Forward(fw.x, [pick(a, b) for a, b in zip(pfw.h, fw.h)],
                       [pick(a, b) for a, b in zip(pfw.phi, fw.phi)], pick(pfw.f, fw.f))

    return Scheme(init_state, step)


def _substeps(span: float, dt: float) -> tuple[int, float]:
    """Equal steps no longer than dt that land exactly on the end of ``span``: (n, span/n)."""
    n = max(1, math.ceil(span / dt - 1e-9))
    return n, span / n


def prior_drift(prior: Prior, kind: str = "ou", lam: Optional[float] = None, readout: bool = False) -> Scheme:
    """Decay and noise alone (SPEC §2, §6.1): the hidden weights, and the readout too when ``readout``.

    A step covers any interval Δ exactly. ``ou``: one exact Ornstein–Uhlenbeck transition (SPEC §2);
    ``mpl``: the ⌈λΔ⌉ equal proximal AR(1) steps of SPEC §1.3 composed in closed form,
    κ_Δ = κ^n, v_Δ = v (1 − κ^(2n)) / (1 − κ²).
    """
    def step(state: State, span: float) -> State:
        if kind == "mpl":
            n, h = _substeps(span, 1 / lam)
            kappa, sd = prior_coefficients("mpl", prior, h)
            decay = kappa ** n
            std = sd * math.sqrt(math.expm1(2 * n * math.log(kappa)) / math.expm1(2 * math.log(kappa)))
        else:
            decay, std = prior_coefficients("ou", prior, span)
        params = [*state.net.hidden, state.net.readout if readout else None]
        for p in params:
            if p is not None:
                p.mul_(decay)
        state.noise.add_params_(params, std)
        state.t += span
        return state

    return Scheme(init_state, step)


@contextmanager
def leave_a_core(noise: Noise):
    """Context: while ``noise`` prefetches on its worker thread, torch's intra-op pool gets one thread fewer
    (an oversubscribed OpenMP pool stalls badly: 10-20x slower steps measured on 2 cores)."""
    threads = torch.get_num_threads()
    if noise.prefetching and threads > 1:
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
             t_learn: Tensor, t_drift: Optional[Tensor], seed: int, device: str = "auto", progress: bool = True
             ) -> SimResult:
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
    dynamics.dt (or lam) when the run diverges.
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
    plan = [_substeps(b - a, dt) for a, b in zip(stops[:-1], stops[1:])]
    index = {t: i for i, t in enumerate(t_learn.tolist())}
    units = sim.activity_units
    learn_rec = _Recorder(t_learn, sim.ensemble, P, Q, units, dtype)
    drift_rec = _Recorder(t_drift, sim.ensemble, P, Q, units, dtype) if t0 is not None else None
    n_drift = len(t_drift) - 1 if t0 is not None else 0

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
                drift_rec(0, dstate.net, x_all)
                for i, span in enumerate(t_drift.diff().tolist(), start=1):
                    drift.step(dstate, span)
                    drift_rec(i, dstate.net, x_all)
                    bar.update(1)
                del dstate

    info = {"scheme": dynamics.scheme, "dt": dt, "steps": steps, "drift_transitions": n_drift,
            "wall_time_s": time.perf_counter() - start, "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
            "antithetic": sim.antithetic, "ntk_max_eig": lam_max}
    if dynamics.scheme == "mpl":
        proposed = state.stats.get("proposed", 0)
        info.update(lam=dynamics.lam, mpl_inner_steps=dynamics.mpl_inner_steps,
                    mpl_acceptance=state.stats.get("accepted", 0) / proposed if proposed else float("nan"))
    return SimResult(learn_rec.phase(), drift_rec.phase() if drift_rec is not None else None,
                     float(t0) if t0 is not None else None, info)
