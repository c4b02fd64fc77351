"""The noise source of the simulator: seeded Gaussian and uniform draws with antithetic pairing, and a
worker thread that draws the next step's noise while the caller computes (SPEC §8).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Optional

import torch
from torch import Tensor

__all__ = ["Noise", "leave_a_core"]


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
        """t ← t + std·ξ in place.

        Parameters
        ----------
        t : Tensor
            [E, ...], one slice per network.
        std : float
            The noise's standard deviation.
        flip : bool
            The partner of an antithetic pair gets −ξ (readout quantities).

        Returns
        -------
        Tensor
            ``t``.
        """
        self._add(self._pairs(t), self.normal(t), std, flip)
        return t

    def add_params_(self, params: list[Optional[Tensor]], std: float) -> None:
        """Θ ← Θ + std·ξ in place for every weight tensor.

        Parameters
        ----------
        params : list of Tensor or None
            Laid out like ``Ensemble.params`` (readout last, flipped in antithetic pairs); None: skipped.
        std : float
            The noise's standard deviation.

        Raises
        ------
        RuntimeError
            When a prefetching Noise is given another list of tensors than on its first call.
        """
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


@contextmanager
def leave_a_core(noise: Noise):
    """Context: while ``noise`` prefetches on its worker thread, torch's intra-op pool gets one thread fewer
    (an oversubscribed OpenMP pool stalls badly: 10-20x slower steps measured on 2 cores).

    Parameters
    ----------
    noise : Noise
        The noise source of the run; without prefetching the pool is left as it is.
    """
    threads = torch.get_num_threads()
    if noise.prefetching and threads > 1:
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
