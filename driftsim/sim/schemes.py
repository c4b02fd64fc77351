"""Langevin and Markov-proximal schemes as (init, step) pairs (SPEC §1.3, §1.4, §6.1, §8).

Schemes share one :class:`State` (the ensemble's weights, the time, the noise source and its generator);
they differ only in ``step(state, h)``, which advances the time by h in place. Recording and the
readout-freezing protocol live outside the schemes, in ``simulate.py`` (STYLE.md, jax-md).

- ``langevin``: split scheme with an exact prior part, Θ ← e^(−γh)Θ − h∇L + sqrt(σ²(1 − e^(−2γh))) ξ
  (L the squared loss, γ = T/σ²), stable for any γh;
- ``euler``: Euler–Maruyama, Θ ← Θ − h∇E + sqrt(2Th) ξ;
- ``mpl``: one step samples the proximal transition density of SPEC §1.3 with λ = 1/h (see :func:`mpl`);
- ``prior_drift``: decay and noise alone (SPEC §2), exact over any interval: the drift phase of §6.1.

Times are those of SPEC §1.4. Shapes: E networks, N units, N0 inputs, P training and Q test points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from ..prior import Prior
from .networks import Ensemble, Forward
from .noise import Noise

__all__ = ["State", "Scheme", "SCHEMES", "init_state", "prior_coefficients", "langevin", "euler", "mpl",
           "mpl_readout_draw", "prior_drift", "substeps"]

SCHEMES = ("langevin", "euler", "mpl")  # the learning schemes (dynamics.scheme)


@dataclass
class State:
    """What every scheme advances: the weights, the time, the noise source (with its generator)."""
    net: Ensemble
    t: float
    noise: Noise
    f_train: Optional[Tensor] = None  # [E, P] training predictor at the last evaluation (divergence checks)
    stats: dict = field(default_factory=dict)  # scheme diagnostics, e.g. MPL acceptance counts


class Scheme(NamedTuple):
    """(init, step) with the scheme's name and weak order, as diffrax solvers declare ``order()``.

    ``init(net, generator, t=0.0) -> State``; ``step(state, h) -> state`` advances by h. ``order``: the weak
    order p of the step against the Langevin SDE of SPEC §1.4 (or, for the drift phase, its prior part):
    |E g(Θ_h(t)) − E g(Θ(t))| = O(h^p) for smooth g at fixed t; ``math.inf`` for an exact transition.
    """
    init: Callable[..., State]
    step: Callable[[State, float], State]
    name: str
    order: float


def init_state(net: Ensemble, generator: torch.Generator, t: float = 0.0, prefetch: bool = False) -> State:
    """The state every scheme starts from.

    Parameters
    ----------
    net : Ensemble
        The weights (advanced in place by the scheme).
    generator : torch.Generator
        The noise's generator, on the ensemble's device.
    t : float
        The starting time.
    prefetch : bool
        Draw the next step's noise on a worker thread (CPU).

    Returns
    -------
    State
    """
    return State(net, float(t), Noise(net.antithetic, generator, prefetch))


def prior_coefficients(kind: str, prior: Prior, h: float) -> tuple[float, float]:
    """One step θ ← decay·θ + std·ξ of the prior part dθ = −γθ dt + sqrt(2T) dB over h.

    Parameters
    ----------
    kind : str
        ``"ou"``: exact, SPEC §2 (e^(−γh), sqrt(σ²(1 − e^(−2γh)))), the transition of ``Prior.coefficients``;
        ``"euler"``: Euler–Maruyama (1 − γh, sqrt(2Th)); ``"mpl"``: the proximal AR(1) of SPEC §1.3 with
        λ = 1/h, (κ, sqrt(v)) = (1/(1 + γh), sqrt(2Th/(1 + γh))).
    prior : Prior
        T and σ (γ = T/σ²).
    h : float
        The step.

    Returns
    -------
    (float, float)
        (decay, std).

    Raises
    ------
    ValueError
        For an unknown kind.
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

    return Scheme(init, step, {"ou": "langevin", "euler": "euler"}[kind], 1)


def langevin(x: Tensor, y: Tensor, prior: Prior) -> Scheme:
    """SPEC §8 split scheme: Θ ← e^(−γh)Θ − h∇L(Θ) + sqrt(σ²(1 − e^(−2γh))) ξ, weak order 1.

    Parameters
    ----------
    x, y : Tensor
        Training inputs [P, N0] and labels [P] in the ensemble's dtype and device; L = 1/2 Σ_μ (f_μ − y_μ)².
    prior : Prior
        T, σ of the dynamics (SPEC §1.4).

    Returns
    -------
    Scheme
        ``name="langevin"``, ``order=1``.
    """
    return _gradient_scheme(x, y, prior, "ou")


def euler(x: Tensor, y: Tensor, prior: Prior) -> Scheme:
    """SPEC §8 Euler–Maruyama: Θ ← Θ − h∇E(Θ) + sqrt(2Th) ξ, E the cost of §1.2, weak order 1.

    Parameters
    ----------
    x, y : Tensor
        Training inputs [P, N0] and labels [P] in the ensemble's dtype and device.
    prior : Prior
        T, σ of the dynamics (SPEC §1.4).

    Returns
    -------
    Scheme
        ``name="euler"``, ``order=1``.
    """
    return _gradient_scheme(x, y, prior, "euler")


def mpl_readout_draw(activity: Tensor, y: Tensor, a_prev: Tensor, lam: float, prior: Prior,
                     noise: Noise) -> Tensor:
    """Exact draw of the readout from the MPL transition density (SPEC §1.3) given the hidden weights.

    With B = φ(h_L)/sqrt(N) [E, N, P] (``activity`` = φ(h_L)) the cost is quadratic in a, and
    exp{−(β/2)[1/2||Bᵀa − y||² + (γ/2)||a||² + (λ/2)||a − a_prev||²]} is the Gaussian
    N(A⁻¹(By + λ a_prev), 2T A⁻¹), A = c I + BBᵀ, c = λ + γ. Drawn as A⁻¹(B(y + sqrt(2T) η) + λ a_prev
    + sqrt(2Tc) ξ) (covariance 2T A⁻¹(cI + BBᵀ)A⁻¹ = 2T A⁻¹), A⁻¹ by Woodbury with a P×P Cholesky
    factor.

    Parameters
    ----------
    activity : Tensor
        φ(h_L) [E, N, P] at the training points.
    y : Tensor
        Labels [P].
    a_prev : Tensor
        The readout of the previous step [E, N].
    lam : float
        λ = 1/h.
    prior : Prior
        T, σ.
    noise : Noise
        Draws η [E, P] and ξ [E, N] (flipped in antithetic pairs).

    Returns
    -------
    Tensor
        The readout a [E, N].
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
    step 1. ``state.stats`` counts MALA proposals and acceptances. Against the Langevin SDE of §1.4 a step
    is O(λ⁻²) off: weak order 1 in h = 1/λ.

    Parameters
    ----------
    x, y : Tensor
        Training inputs [P, N0] and labels [P] in the ensemble's dtype and device.
    prior : Prior
        T, σ.
    inner_steps : int
        MALA sweeps per step (dynamics.mpl_inner_steps).

    Returns
    -------
    Scheme
        ``name="mpl"``, ``order=1``.
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

    return Scheme(init_state, step, "mpl", 1)


def substeps(span: float, dt: float) -> tuple[int, float]:
    """Equal steps no longer than dt that land exactly on the end of ``span``.

    Returns
    -------
    (int, float)
        (n, span/n) with n = ⌈span/dt⌉ (at least 1).
    """
    n = max(1, math.ceil(span / dt - 1e-9))
    return n, span / n


def prior_drift(prior: Prior, kind: str = "ou", lam: Optional[float] = None, readout: bool = False) -> Scheme:
    """Decay and noise alone (SPEC §2, §6.1): the hidden weights, and the readout too when ``readout``.

    A step covers any interval Δ exactly. ``ou``: one exact Ornstein–Uhlenbeck transition (SPEC §2);
    ``mpl``: the ⌈λΔ⌉ equal proximal AR(1) steps of SPEC §1.3 composed in closed form,
    κ_Δ = κ^n, v_Δ = v (1 − κ^(2n)) / (1 − κ²).

    Parameters
    ----------
    prior : Prior
        T, σ.
    kind : str
        ``"ou"`` or ``"mpl"``.
    lam : float, optional
        λ of the MPL chain (``kind="mpl"``).
    readout : bool
        Move the readout too (protocol.freeze=none).

    Returns
    -------
    Scheme
        ``order=inf`` for ``ou`` (exact), 1 for ``mpl`` (against the continuous OU process).
    """
    def step(state: State, span: float) -> State:
        if kind == "mpl":
            n, h = substeps(span, 1 / lam)
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

    return Scheme(init_state, step, f"prior_drift/{kind}", math.inf if kind == "ou" else 1)
