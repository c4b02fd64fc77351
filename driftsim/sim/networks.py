"""Ensembles of finite-width networks of SPEC §1.1, held as batched tensors.

E networks of depth L, width N, input dimension N0, NTK parametrisation, no biases:
``hidden[0]`` = W_1 [E, N, N0], ``hidden[l]`` = W_{l+1} [E, N, N], ``readout`` = a [E, N].
Activations are kept as [E, N, P] (one column per input point), so every layer of every network is one
batched matrix product, and the backward pass of the squared loss is written out by hand with the
activation's φ' (no autograd graph, no Python loop over networks). W_1 is stored input-major (its memory
is [N0, E, N]; ``hidden[0]`` is a view of the shape above): with N0 and P small, the first layer's
products are then wide GEMMs [P, N0] @ [N0, E·N] with contiguous outputs, several times faster than
tall-skinny ones.

Antithetic ensembles (``antithetic=True``): networks 2k and 2k+1 start with the same hidden weights and
opposite readouts, (W, a) and (W, −a). The map (W, a) → (W, −a) leaves the prior and the initial law
invariant and flips the sign of f, so the pair's mean cancels the prior fluctuation f_0 (SPEC §10). The
dynamics keep the pair antithetic *in law* when the partner is driven by the same hidden noise and the
opposite readout noise (see ``langevin.Noise``): each network on its own is then an exact sample of the
process, and in the linearised picture f = f_0 + K_d ∗ (Y − f) the pair average has no f_0 part at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..activations import Activation, get_activation
from ..validation import check_depth, check_ensemble, choice

__all__ = ["Ensemble", "Forward", "init_ensemble", "resolve_device", "resolve_dtype", "SIM_DTYPES"]

SIM_DTYPES = ("float32", "float64")  # floating types of simulated ensembles


def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """The torch device of a simulation.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``: CUDA when present, the CPU otherwise; ``"cpu"``, ``"cuda"`` (or ``"cuda:k"``) as asked.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When CUDA is asked for and torch sees none.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use device=auto or cpu")
    return dev


def resolve_dtype(dtype: "str | torch.dtype") -> torch.dtype:
    """The torch dtype of a simulation.

    Parameters
    ----------
    dtype : str or torch.dtype
        ``"float32"`` (default of simulations), ``"float64"``, or either torch dtype.

    Returns
    -------
    torch.dtype

    Raises
    ------
    ValueError
        Naming sim.dtype, for any other value.
    """
    if dtype in (torch.float32, torch.float64):
        return dtype
    return getattr(torch, choice("sim.dtype", dtype, SIM_DTYPES))


@dataclass
class Forward:
    """What the backward pass needs from a forward pass over P points."""
    x: Tensor  # [P, N0], the inputs, in the ensemble's dtype and device
    h: list[Tensor]  # pre-activations h_l, [E, N, P], l = 1..L
    phi: list[Tensor]  # φ(h_l), [E, N, P]
    f: Tensor  # [E, P], the predictors

    @property
    def activity(self) -> Tensor:
        """Last hidden layer φ(h_L), [E, N, P]."""
        return self.phi[-1]


@dataclass
class Ensemble:
    """E networks of SPEC §1.1 as batched weights; see the module docstring for shapes."""
    hidden: list[Tensor]
    readout: Tensor
    activation: Activation
    antithetic: bool = False

    def __post_init__(self):
        w1 = self.hidden[0]
        if not w1.permute(2, 0, 1).is_contiguous():  # input-major storage, see the module docstring
            self.hidden = [w1.permute(2, 0, 1).contiguous().permute(1, 2, 0), *self.hidden[1:]]

    def _w1_matrix(self, w1: Tensor) -> Tensor:
        """W_1 (or a tensor laid out like it) as the [N0, E·N] matrix of its memory."""
        return w1.permute(2, 0, 1).view(self.input_dim, self.size * self.width)  # raises rather than copy

    @property
    def params(self) -> list[Tensor]:
        """All weights Θ = (W_1, ..., W_L, a), readout last."""
        return [*self.hidden, self.readout]

    @property
    def size(self) -> int:
        return self.readout.shape[0]

    @property
    def width(self) -> int:
        return self.readout.shape[1]

    @property
    def depth(self) -> int:
        return len(self.hidden)

    @property
    def input_dim(self) -> int:
        return self.hidden[0].shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.readout.dtype

    @property
    def device(self) -> torch.device:
        return self.readout.device

    def with_hidden(self, hidden: list[Tensor]) -> "Ensemble":
        """The same readout and activation on other hidden weights (no copy)."""
        return Ensemble(hidden, self.readout, self.activation, self.antithetic)

    def clone(self) -> "Ensemble":
        return Ensemble([w.clone() for w in self.hidden], self.readout.clone(), self.activation, self.antithetic)

    def head(self, phi_last: Tensor) -> Tensor:
        """SPEC §1.1 output f = a . φ(h_L) / sqrt(N): [E, N, P] → [E, P]."""
        return torch.bmm(self.readout.unsqueeze(1), phi_last).squeeze(1).mul_(1 / math.sqrt(self.width))

    def forward(self, x: Tensor) -> Forward:
        """SPEC §1.1 for every network at once.

        Parameters
        ----------
        x : Tensor
            Inputs [P, N0] (cast to the ensemble's dtype and device).

        Returns
        -------
        Forward
            f [E, P] and every layer's h_l, φ(h_l) [E, N, P].
        """
        x = x.to(dtype=self.dtype, device=self.device)
        E, N, P = self.size, self.width, len(x)
        h = torch.mm(x, self._w1_matrix(self.hidden[0])).mul_(1 / math.sqrt(self.input_dim))
        h = h.view(P, E, N).permute(1, 2, 0)  # [E, N, P], memory [P, E, N]
        hs, phis = [h], [self.activation.phi(h)]
        for w in self.hidden[1:]:
            h = torch.bmm(w, phis[-1]).mul_(1 / math.sqrt(self.width))
            hs.append(h)
            phis.append(self.activation.phi(h))
        return Forward(x, hs, phis, self.head(phis[-1]))

    def backward(self, fw: Forward, r: Tensor) -> list[Tensor]:
        """Backward pass: δ_l = ∂L/∂h_l for L = Σ_μ r_μ f_μ with r held fixed (r = f − y: the squared loss).

        Column μ only feeds f_μ, so r = 1 gives the per-point derivatives ∂f_μ/∂h_l(x_μ) (used by ``ntk``).

        Parameters
        ----------
        fw : Forward
            The forward pass over P points.
        r : Tensor
            Weights of the points [E, P].

        Returns
        -------
        list of Tensor
            δ_1, ..., δ_L, each [E, N, P].
        """
        scale = 1 / math.sqrt(self.width)
        grad_phi = torch.mul(self.readout.unsqueeze(2), r.unsqueeze(1) * scale,  # ∂L/∂φ(h_L), laid out like h_L
                             out=torch.empty_like(fw.h[-1]))
        deltas = []
        for l in reversed(range(self.depth)):
            delta = grad_phi.mul_(self.activation.dphi(fw.h[l]))
            deltas.append(delta)
            if l > 0:
                grad_phi = torch.bmm(self.hidden[l].transpose(1, 2), delta).mul_(scale)
        return deltas[::-1]

    def accumulate_(self, out: list[Optional[Tensor]], fw: Forward, deltas: list[Tensor], r: Tensor,
                    alpha: float, beta: float = 1.0) -> list[Optional[Tensor]]:
        """out ← beta·out + alpha·∇_Θ L in place, one fused GEMM per weight tensor (L as in ``backward``).

        ``out`` is laid out like ``params`` (shapes [E, N, N0], [E, N, N], ..., [E, N], the first stored
        input-major like ``hidden[0]``: ``torch.empty_like`` keeps that); None entries are skipped. With beta = 0
        the old content of ``out`` is ignored (it may be uninitialised); with
        out = params and beta = e^(−γdt), alpha = −dt this is the drift of a Langevin step (SPEC §8).
        """
        E, N, P = self.size, self.width, fw.f.shape[1]
        scale = 1 / math.sqrt(N)
        for l, o in enumerate(out[:-1]):
            if o is None:
                continue
            if l == 0:  # ∂L/∂W_1 = δ_1 xᵀ / sqrt(N0), one wide [N0, P] @ [P, E·N] GEMM
                self._w1_matrix(o).addmm_(fw.x.T, deltas[0].permute(2, 0, 1).reshape(P, E * N), beta=beta,
                                          alpha=alpha / math.sqrt(self.input_dim))
            else:  # ∂L/∂W_{l+1} = δ_{l+1} φ(h_l)ᵀ / sqrt(N)
                o.baddbmm_(deltas[l], fw.phi[l - 1].transpose(1, 2), beta=beta, alpha=alpha * scale)
        if out[-1] is not None:  # ∂L/∂a = φ(h_L) r / sqrt(N), as rows rᵀ φ(h_L)ᵀ (much faster than columns)
            out[-1].unsqueeze(1).baddbmm_(r.unsqueeze(1), fw.phi[-1].transpose(1, 2), beta=beta, alpha=alpha * scale)
        return out

    def gradient(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """∇_Θ of the squared loss 1/2 Σ_μ (f(x_μ) − y_μ)² (SPEC §1.2 without the prior term), all networks.

        Parameters
        ----------
        x, y : Tensor
            Inputs [P, N0] and labels [P].

        Returns
        -------
        list of Tensor
            The gradient, laid out like ``params``.
        """
        fw = self.forward(x)
        r = fw.f - y.to(fw.f)
        out = [torch.empty_like(p) for p in self.params]
        return self.accumulate_(out, fw, self.backward(fw, r), r, alpha=1.0, beta=0.0)

    def ntk(self, x: Tensor) -> Tensor:
        """Empirical NTK Σ_Θ ∂f(x_μ)/∂Θ · ∂f(x_ν)/∂Θ per network (SPEC §3.2, finite width).

        Per layer the weight gradient of f_μ is δ_l^μ φ(h_{l−1}^μ)ᵀ / sqrt(N_{l−1}), so the kernel is a sum
        of Hadamard products of Gram matrices; no per-point Jacobian is materialised.

        Parameters
        ----------
        x : Tensor
            Inputs [P, N0].

        Returns
        -------
        Tensor
            [E, P, P].
        """
        fw = self.forward(x)
        deltas = self.backward(fw, torch.ones_like(fw.f))
        gram = lambda u: torch.bmm(u.transpose(1, 2), u)  # noqa: E731  [E, N, P] → [E, P, P]
        k = gram(fw.phi[-1]) / self.width
        k += gram(deltas[0]) * (fw.x @ fw.x.T / self.input_dim)
        for l in range(1, self.depth):
            k += gram(deltas[l]) * gram(fw.phi[l - 1]) / self.width
        return k


def init_ensemble(size: int, input_dim: int, width: int, depth: int, activation: "str | Activation",
                  sigma0: float, *, generator: torch.Generator, dtype: "str | torch.dtype" = torch.float32,
                  antithetic: bool = False) -> Ensemble:
    """E = ``size`` networks with every weight i.i.d. N(0, σ0²) (SPEC §1.2 initialisation).

    Parameters
    ----------
    size : int
        E (sim.ensemble), even when ``antithetic``.
    input_dim, width, depth : int
        N0, N and L of SPEC §1.1.
    activation : str or Activation
        φ (model.activation).
    sigma0 : float
        Initialisation std σ0.
    generator : torch.Generator
        Seeds the draw; the weights live on its device.
    dtype : str or torch.dtype
        ``float32`` or ``float64``.
    antithetic : bool
        Networks 2k, 2k+1 share hidden weights and have readouts a, −a.

    Returns
    -------
    Ensemble

    Raises
    ------
    ValueError
        Naming sim.ensemble, model.depth, model.activation or sim.dtype.
    """
    check_ensemble(size, antithetic)
    check_depth(depth)
    dtype = resolve_dtype(dtype)
    n = size // 2 if antithetic else size

    def draw(*shape: int) -> Tensor:
        return torch.empty(shape, dtype=dtype, device=generator.device).normal_(0.0, sigma0, generator=generator)

    w1 = draw(input_dim, n, width)  # input-major memory, see the module docstring
    hidden = [w1] + [draw(n, width, width) for _ in range(depth - 1)]
    readout = draw(n, width)
    if antithetic:
        hidden = [w.repeat_interleave(2, dim=1 if l == 0 else 0) for l, w in enumerate(hidden)]
        readout = torch.stack([readout, -readout], dim=1).reshape(size, width)
    hidden[0] = hidden[0].permute(1, 2, 0)
    return Ensemble(hidden, readout, get_activation(activation), antithetic)
