"""Drift metrics of an infinite population of hidden units, predicted from the two-time kernels (SPEC §3.1).

At infinite width the units of hidden layer l are independent draws of one Gaussian process over
(stimulus, time): unit i's pre-activation h_l,i(x,t) is centred Gaussian with covariance
Q_l(t,t',x,x') = C(t,t') K_{l−1}(t,t',x,x') (Q_1 = C x.x'/N0), during learning and during the
frozen-readout drift alike (learning moves each hidden weight by O(1/√N), so the representation drifts as
the prior does). Every population statistic is then an expectation over that process of the unit's
activity φ(h_l,i): E[φφ'] is the layer kernel K_l (SPEC §4 expectations), E[φ] the activation's mean.

- population-vector (PV) correlation between times t, t' (Pearson over units, mean over stimuli x):
  (E[φ(h)φ(h')] − E[φ(h)]E[φ(h')]) / √(Var φ(h) Var φ(h')), (h, h') at (x,t), (x,t');
- ensemble rate correlation: the same over units of the unit's mean over stimuli m_u(t) = mean_x φ_u(x,t);
- similarity at one time: the Pearson correlation over units between two stimuli's population vectors;
- the fixed ridge decoder and its decorrelated limit (SPEC §6.4), in :func:`fixed_decoder`;
- finite populations: :func:`sample_units` draws units from the process itself.

Inputs: stimuli x [X, N0]; times are absolute (a session at drift time τ_s after the freeze is t0 + τ_s).
``layer`` counts hidden layers from 1 (default the last, ``depth``). Results are float64, on x's device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation, get_activation
from ..prior import Prior
from .kernels import KernelModel

__all__ = ["FixedDecoder", "Moments", "fixed_decoder", "layer_of", "moments", "pv_correlation", "rate_correlation",
           "sample_units", "similarity", "stationary_pv_correlation"]

# pairs of times per batch of the kernel recursion: bounds its [pairs, X, X] temporaries to ~64 MB
_ENTRIES_PER_BATCH = 1 << 23


def layer_of(layer: int | None, depth: int) -> int:
    """The observed hidden layer: ``layer`` in 1..depth, or the last one when None; else a ValueError."""
    if layer is None:
        return depth
    if not isinstance(layer, int) or not 1 <= layer <= depth:
        raise ValueError(f"observe.layer={layer!r} is not allowed: a hidden layer 1..model.depth={depth} "
                         "(unset: the last)")
    return layer


def _as64(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or not torch.isfinite(x).all():
        raise ValueError(f"stimuli x must be a finite 2-D array [stimuli, input_dim]; got shape {tuple(x.shape)}")
    return x.to(torch.float64)


@dataclass(frozen=True)
class Moments:
    """First and second moments of a unit's activity φ(h_l) at (xa, t) and (xb, s), a batch of B time pairs.

    cross [B, p, q] = E[φ(h(xa,t)) φ(h(xb,s))] (the layer kernel K_l); mean_a [B, p], mean_b [B, q] = E[φ];
    second_a [B, p], second_b [B, q] = E[φ²].
    """
    cross: Tensor
    mean_a: Tensor
    mean_b: Tensor
    second_a: Tensor
    second_b: Tensor

    def covariance(self) -> Tensor:
        """Cov over units of φ(h(xa,t)) and φ(h(xb,s)): [B, p, q]."""
        return self.cross - self.mean_a[:, :, None] * self.mean_b[:, None, :]

    def variances(self) -> tuple[Tensor, Tensor]:
        """Var over units of φ(h(xa,t)) [B, p] and of φ(h(xb,s)) [B, q]."""
        return self.second_a - self.mean_a ** 2, self.second_b - self.mean_b ** 2


def moments(model: KernelModel, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, xa: Tensor, xb: Tensor) -> Moments:
    """SPEC §3.1, §4: the activity moments of layer ``model.depth`` for weight statistics C(t,s), C(t,t),
    C(s,s) (each [B]) between the times; xa [p, N0], xb [q, N0] → :class:`Moments`."""
    (mean_a, second_a), (mean_b, second_b) = _marginal(model, c_tt, xa), _marginal(model, c_ss, xb)
    return Moments(model.correlated(c_ts, c_tt, c_ss, xa, xb).k, mean_a, mean_b, second_a, second_b)


def _marginal(model: KernelModel, c: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """E[φ] and E[φ²] [B, p] of a unit of layer ``model.depth`` at x [p, N0], weight variances c [B]."""
    q = model.variances(c, (x * x).sum(1) / x.shape[1])[-1]
    return model.activation.mean(q), model.activation.expect_diag(q)


def _pv(model: KernelModel, c_ts: Tensor, c_tt: Tensor, c_ss: Tensor, x: Tensor) -> Tensor:
    """PV correlation [B] per time pair with weight statistics C(t,t'), C(t,t), C(t',t') (each [B]): per
    stimulus the moments of :func:`moments` at (x,t), (x,t') from the diagonal of the two-time kernel
    alone (KernelModel.correlated_diagonal), Pearson over units, mean over the stimuli x [X, N0]."""
    (mean_a, second_a), (mean_b, second_b) = _marginal(model, c_tt, x), _marginal(model, c_ss, x)
    cov = model.correlated_diagonal(c_ts, c_tt, c_ss, x).k - mean_a * mean_b
    return (cov / ((second_a - mean_a ** 2) * (second_b - mean_b ** 2)).sqrt()).mean(1)


def _batches(n: int, points: int):
    """Slices of range(n) whose [len, points, points] kernels stay within _ENTRIES_PER_BATCH entries."""
    step = max(1, _ENTRIES_PER_BATCH // max(points * points, 1))
    return (slice(a, min(a + step, n)) for a in range(0, n, step))


def stationary_pv_correlation(x: Tensor, *, depth: int, activation: str | Activation, sigma: float,
                              rho: Tensor, layer: int | None = None) -> Tensor:
    """Infinite-population PV correlation of layer ``layer`` between two times at weight equilibrium.

    The weights have C(t,t) = C(t',t') = σ² and C(t,t') = σ² ρ, ρ = e^(−γ|t−t'|) (SPEC §2 once the
    transient has faded, t, t' ≫ 1/γ); the PV correlation is (E[φφ'] − E[φ]E[φ'])/Var φ with the 2×2
    Gaussian of the two-time recursion (SPEC §3.1, §4), averaged over the stimuli.

    Parameters
    ----------
    x : Tensor [X, N0]
        Stimuli.
    depth : int
        Hidden layers L of the network (the recursion runs to ``layer``).
    activation : str or Activation
        φ.
    sigma : float
        Prior std σ.
    rho : Tensor [R]
        Weight correlations ρ ∈ [−1, 1] between the two times.
    layer : int, optional
        Observed hidden layer 1..depth (default the last).

    Returns
    -------
    Tensor [R]
        PV correlation at each ρ (float64, on x's device); 1 at ρ = 1.
    """
    x = _as64(x)
    rho = torch.as_tensor(rho, dtype=torch.float64, device=x.device).reshape(-1)
    if not bool(((rho >= -1) & (rho <= 1)).all()):
        raise ValueError(f"rho must lie in [-1, 1] (a weight correlation); got {rho.tolist()[:8]}")
    # the prior only fixes σ here: the weight statistics are given, not taken from its OU process
    model = KernelModel(activation, layer_of(layer, depth), Prior(1.0, sigma, sigma))
    s2 = model.prior.sigma ** 2
    var = torch.full_like(rho, s2)
    return _pv(model, s2 * rho, var, var, x)


def _pairs(times: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered pairs (t_i, t_j) of S times, row-major: two [S²] tensors."""
    ti, tj = torch.meshgrid(times, times, indexing="ij")
    return ti.reshape(-1), tj.reshape(-1)


def _times(times: Tensor, device: torch.device) -> Tensor:
    t = torch.as_tensor(times, dtype=torch.float64, device=device).reshape(-1)
    if len(t) == 0 or not bool(torch.isfinite(t).all() & (t >= 0).all()):
        raise ValueError(f"times must be a non-empty 1-D array of finite absolute times >= 0; got {t.tolist()[:8]}")
    return t


def _over_pairs(model: KernelModel, ti: Tensor, tj: Tensor, xa: Tensor, xb: Tensor, reduce) -> Tensor:
    """reduce(Moments) for the prior's weight statistics between times ti and tj (each [B]), in batches."""
    prior = model.prior
    parts = [reduce(moments(model, prior.cov(ti[sl], tj[sl]), prior.var(ti[sl]), prior.var(tj[sl]), xa, xb))
             for sl in _batches(len(ti), max(len(xa), len(xb)))]
    return torch.cat(parts)


def pv_correlation(x: Tensor, *, depth: int, activation: str | Activation, prior: Prior, times: Tensor,
                   layer: int | None = None) -> Tensor:
    """Infinite-population PV correlation between every two session times, under the prior's weight process.

    Weight statistics C(t,t') of SPEC §2 (σ0 ≠ σ allowed: the transient makes the sessions' variances
    differ), the 2×2 Gaussian of the two-time recursion (SPEC §3.1) per stimulus, Pearson over units,
    mean over stimuli.

    Parameters
    ----------
    x : Tensor [X, N0]
        Stimuli.
    depth, activation, prior
        The architecture and the weights' prior (SPEC §1.1, §2).
    times : Tensor [S]
        Absolute session times (t0 + τ_s for sessions τ_s after a freeze at t0).
    layer : int, optional
        Observed hidden layer 1..depth (default the last).

    Returns
    -------
    Tensor [S, S]
        Symmetric, ones on the diagonal (float64, on x's device).
    """
    x = _as64(x)
    t = _times(times, x.device)
    ti, tj = _pairs(t)
    model = KernelModel(activation, layer_of(layer, depth), prior)
    return _pv(model, prior.cov(ti, tj), prior.var(ti), prior.var(tj), x).reshape(len(t), len(t))


def rate_correlation(x: Tensor, *, depth: int, activation: str | Activation, prior: Prior, times: Tensor,
                     layer: int | None = None) -> Tensor:
    """Infinite-population ensemble rate correlation between every two session times.

    A unit's rate at time t is its mean over the stimuli, m_u(t) = mean_x φ(h_u(x,t)); over units
    Cov(m_u(t), m_u(t')) = mean over x, x' of Cov(φ(h(x,t)), φ(h(x',t'))) from the two-time kernel
    (SPEC §3.1, §4), and the correlation divides by the same at t' = t.

    Parameters
    ----------
    x, depth, activation, prior, times, layer
        As in :func:`pv_correlation`.

    Returns
    -------
    Tensor [S, S]
        Symmetric, ones on the diagonal (float64, on x's device).
    """
    x = _as64(x)
    t = _times(times, x.device)
    i, j = torch.triu_indices(len(t), len(t), device=x.device)  # symmetric: each pair once
    model = KernelModel(activation, layer_of(layer, depth), prior)
    cov = torch.empty(len(t), len(t), dtype=torch.float64, device=x.device)
    cov[i, j] = cov[j, i] = _over_pairs(model, t[i], t[j], x, x, lambda m: m.covariance().mean((1, 2)))
    sd = cov.diagonal().sqrt()
    return cov / (sd[:, None] * sd[None, :])


def similarity(x: Tensor, *, depth: int, activation: str | Activation, prior: Prior, times: Tensor,
               layer: int | None = None) -> Tensor:
    """Infinite-population similarity of the stimuli at each time: the Pearson correlation over units of
    the population vectors of x and x', (K_l(x,x') − E[φ(x)]E[φ(x')]) / √(Var φ(x) Var φ(x')), from the
    one-time layer kernel (SPEC §3.1 at t = t'). Stationary once the weights are (σ0 = σ or t ≫ 1/γ).

    Parameters
    ----------
    x, depth, activation, prior, layer
        As in :func:`pv_correlation`.
    times : Tensor [S] or scalar
        Absolute times.

    Returns
    -------
    Tensor [S, X, X] ([X, X] for a scalar time)
        Symmetric with ones on the diagonal (float64, on x's device).
    """
    x = _as64(x)
    t = _times(times, x.device)
    model = KernelModel(activation, layer_of(layer, depth), prior)

    def corr(m: Moments) -> Tensor:
        va, vb = m.variances()
        return m.covariance() / (va[:, :, None] * vb[:, None, :]).sqrt()

    out = _over_pairs(model, t, t, x, x, corr)
    return out if torch.as_tensor(times).ndim else out[0]


def _sign_accuracy(f: Tensor, y: Tensor, resolution: float) -> Tensor:
    """Fraction of the last axis where sign(f) is the label y (±1); an output within ``resolution`` of 0 is
    a tie and counts ½ (an odd φ's limit is exactly 0; a signal below the theory's accuracy is not one)."""
    tie = f.abs() <= resolution
    return torch.where(tie, 0.5, (torch.sign(f) == y).to(torch.float64)).mean(-1)


@dataclass(frozen=True)
class FixedDecoder:
    """A ridge decoder fitted at one time on infinitely many units, read at later times (dual form).

    output [S, Q]: its output on the evaluation stimuli at each session; accuracy [S]: fraction of them
    whose output has the sign of their label (ties ½); output_inf [Q], accuracy_inf: the same at t → ∞.
    """
    output: Tensor
    accuracy: Tensor
    output_inf: Tensor
    accuracy_inf: float


def fixed_decoder(x_fit: Tensor, y_fit: Tensor, x_eval: Tensor, y_eval: Tensor, *, depth: int,
                  activation: str | Activation, prior: Prior, t_fit: float, times: Tensor, ridge: float,
                  layer: int | None = None, resolution: float = 0.0) -> FixedDecoder:
    """Ridge decoder on the activity of an infinite population, fitted at t_fit and kept fixed.

    With features φ_u(x)/√U of U → ∞ units (uncentred, no intercept) the ridge fit on (x_fit, y_fit) at
    t_fit reads, at time t, f(x,t) = k(x,t; X,t_fit) (K(t_fit,t_fit) + λI)⁻¹ y with k and K the two-time
    layer kernel E[φφ'] (SPEC §3.1). As t → ∞ the two times decorrelate and k becomes the mean kernel
    E[φ(h(x,∞))] E[φ(h(X,t_fit))] (SPEC §6.4; variances at equilibrium, C(∞,∞) = σ²): the recursion with
    C(t,t') = 0. For the last layer, λ = T/σ² and t_fit at equilibrium this is the frozen readout's mean
    predictor (SPEC §6.3: K_gp = σ² K_L). The finite-population decoder that matches it is ridge
    regression without intercept on φ/√U (sklearn ``Ridge(alpha=λ, fit_intercept=False)``).

    Parameters
    ----------
    x_fit : Tensor [P, N0]
    y_fit : Tensor [P]
        Stimuli and labels (±1) of the fit.
    x_eval : Tensor [Q, N0]
    y_eval : Tensor [Q]
        Stimuli and labels it is scored on.
    depth, activation, prior, layer
        As in :func:`pv_correlation`.
    t_fit : float
        Absolute time of the fit (the freeze t0 for session 0).
    times : Tensor [S]
        Absolute times it is read at.
    ridge : float
        λ > 0, in the units of the layer kernel.
    resolution : float
        Outputs within it of 0 count as ties (½) in the accuracy (the app passes theory.tol).

    Returns
    -------
    FixedDecoder
    """
    x_fit, x_eval = _as64(x_fit), _as64(x_eval)
    dev = x_fit.device
    y_fit = torch.as_tensor(y_fit, dtype=torch.float64, device=dev).reshape(-1)
    y_eval = torch.as_tensor(y_eval, dtype=torch.float64, device=dev).reshape(-1)
    if len(y_fit) != len(x_fit) or len(y_eval) != len(x_eval):
        raise ValueError(f"labels must match the stimuli: y_fit {len(y_fit)} for x_fit {len(x_fit)}, "
                         f"y_eval {len(y_eval)} for x_eval {len(x_eval)}")
    if not ridge > 0:
        raise ValueError(f"ridge={ridge!r} must be > 0 (the ridge decoder's regulariser λ)")
    t = _times(times, dev)
    model = KernelModel(activation, layer_of(layer, depth), prior)
    t0 = torch.full((1,), float(t_fit), dtype=torch.float64, device=dev)
    gram = moments(model, prior.var(t0), prior.var(t0), prior.var(t0), x_fit, x_fit).cross[0]
    alpha = torch.linalg.solve(gram + ridge * torch.eye(len(x_fit), dtype=gram.dtype, device=dev), y_fit)
    cross = _over_pairs(model, t, t0.expand_as(t), x_eval, x_fit, lambda m: m.cross)  # [S, Q, P]
    output = cross @ alpha
    s2 = torch.full((1,), prior.sigma ** 2, dtype=torch.float64, device=dev)
    limit = moments(model, torch.zeros_like(s2), s2, prior.var(t0), x_eval, x_fit).cross[0]
    output_inf = limit @ alpha
    return FixedDecoder(output, _sign_accuracy(output, y_eval, resolution), output_inf,
                        float(_sign_accuracy(output_inf, y_eval, resolution)))


def _cholesky(q: Tensor) -> Tensor:
    """Lower Cholesky factor of the covariance q, adding the smallest jitter (relative to its mean
    diagonal, 0 then 1e-12 … 1e-8) that makes rounding errors of a positive semi-definite q harmless."""
    scale = float(q.diagonal().mean())
    eye = torch.eye(len(q), dtype=q.dtype, device=q.device)
    for jitter in (0.0, 1e-12, 1e-10, 1e-8):
        root, info = torch.linalg.cholesky_ex(q + jitter * scale * eye)
        if int(info) == 0:
            return root
    raise ValueError("the units' covariance over (time, stimulus) is not positive semi-definite beyond a "
                     "jitter of 1e-8 of its diagonal; check the stimuli and times for NaN or huge values")


def sample_units(x: Tensor, *, depth: int, activation: str | Activation, prior: Prior, times: Tensor,
                 cells: int, seed: int, layer: int | None = None) -> Tensor:
    """A finite population drawn from the infinite-width Gaussian process of layer ``layer``'s units.

    Each unit's pre-activations at all (time, stimulus) pairs are jointly Gaussian with covariance
    Q_l(t,t',x,x') = C(t,t') K_{l−1}(t,t',x,x') (Q_1 = C(t,t') x.x'/N0; SPEC §3.1), drawn through the
    Cholesky factor of that [S·X, S·X] matrix (with a jitter of at most 1e-8 of its mean diagonal where it
    is singular, e.g. repeated stimuli or more stimuli than input dimensions), independently per unit; the units'
    activity is φ of them. Q_1 = C ⊗ K_0 is a Kronecker product, whose Cholesky factor is L_C ⊗ L_K0: the first
    layer is drawn through the two small factors (each with its own jitter), the same draws to rounding at a
    tenth of the cost. For layer l > 1 this is the infinite-width law: the previous layer's empirical kernel
    concentrates on K_{l−1}.

    Parameters
    ----------
    x, depth, activation, prior, times, layer
        As in :func:`pv_correlation`.
    cells : int
        Units drawn, C ≥ 1.
    seed : int
        Seed of the torch generator (on x's device).

    Returns
    -------
    Tensor [S, C, X]
        Activity φ(h) of each unit at each time and stimulus (float64, on x's device).
    """
    x = _as64(x)
    t = _times(times, x.device)
    if not isinstance(cells, int) or cells < 1:
        raise ValueError(f"cells={cells!r} must be an integer >= 1")
    l = layer_of(layer, depth)
    S, X = len(t), len(x)
    ti, tj = _pairs(t)
    c = prior.cov(ti, tj)
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    z = torch.randn(S * X, cells, generator=g, dtype=torch.float64, device=x.device)
    if l == 1:  # (L_C ⊗ L_K) z, z as [S, X, cells]: L_K mixes the stimuli, L_C the sessions
        k = x @ x.T / x.shape[1]
        mixed = _cholesky(0.5 * (k + k.T)) @ z.reshape(S, X, cells)
        c = c.reshape(S, S)
        h = (_cholesky(0.5 * (c + c.T)) @ mixed.reshape(S, X * cells)).reshape(S, X, cells)
    else:
        below = KernelModel(activation, l - 1, prior)
        q = c[:, None, None] * _over_pairs(below, ti, tj, x, x, lambda m: m.cross)
        q = q.reshape(S, S, X, X).permute(0, 2, 1, 3).reshape(S * X, S * X)
        h = (_cholesky(0.5 * (q + q.T)) @ z).reshape(S, X, cells)
    return get_activation(activation).phi(h).transpose(1, 2)
