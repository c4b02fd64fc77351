"""The theory's memory budget (``theory.memory_gb``): what the expansion and the Volterra solve hold, checked
before any P²-sized work, and the largest problem that fits.

Held for the whole solution (float64): the expansion's coefficients, K rates × M u-nodes × (P+Q) × P per
expanded kernel (the NDK; K_GP too for the covariance with σ0 ≠ σ), and the Volterra solve's layout of
the training block for its history product, K M P², with its lag matrices, (BLOCK_MAX − 1) M P²
(``volterra.solve_separable``). The kernel samples of
the fit come on top, one block of rows at a time (``expansion.block_rows``): they take what the budget
leaves, at least one row.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

from .expansion import DOUBLES_PER_SAMPLE
from .volterra import BLOCK_MAX

__all__ = ["available_gb", "physical_bytes", "default_budget_gb", "held_bytes", "largest_points", "check_budget"]

# of the memory free when the run starts: the rest is left to the process's other arrays and to the system
SAFE_FRACTION = 0.5


def available_gb(device: torch.device) -> float:
    """Free memory of ``device`` in GB: the GPU's free memory, or the system's available RAM (/proc/meminfo,
    else physical RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return physical_bytes() / 2**30


def physical_bytes() -> float:
    """The machine's physical RAM (``os.sysconf``), or 8 GiB where it cannot be read."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * 2**30


def default_budget_gb(device: torch.device) -> float:
    """``theory.memory_gb`` when unset: SAFE_FRACTION of :func:`available_gb`."""
    return SAFE_FRACTION * available_gb(device)


def held_bytes(p: int, q: int, rates: int, u_nodes: int, parts: int) -> float:
    """Bytes the solution holds throughout (module docstring) for P = p training and Q = q test points."""
    return 8.0 * u_nodes * p * (rates * (parts * (p + q) + p) + (BLOCK_MAX - 1) * p)


def _one_row_bytes(p: int, parts: int, lags: int) -> float:
    return 8.0 * DOUBLES_PER_SAMPLE * lags * p * parts


def largest_points(q: int, rates: int, u_nodes: int, parts: int, lags: int, budget_bytes: float) -> int:
    """The largest number of training points P whose solution fits ``budget_bytes`` (0 if none)."""
    def fits(p: int) -> bool:
        return held_bytes(p, q, rates, u_nodes, parts) + _one_row_bytes(p, parts, lags) <= budget_bytes

    lo, hi = 0, 1
    while fits(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_budget(p: int, q: int, rates: int, u_nodes: int, parts: int, lags: int, memory_gb: Optional[float],
                 device: torch.device, rates_at_most: Optional[int] = None) -> float:
    """Refuse a problem whose solution cannot fit the budget, before any work; else return the bytes left for
    the kernel samples of the fit.

    Parameters
    ----------
    p, q : int
        Training and test points.
    rates, u_nodes, parts, lags : int
        Rates K of the expansion, u-nodes M (1 when σ0 = σ), expanded kernels, fit lags.
    rates_at_most : int, optional
        A bound on the rates of any smaller problem, for the largest P named (default ``rates``).
    memory_gb : float or None
        The budget; None: :func:`default_budget_gb`.
    device : torch.device
        Where the theory computes.

    Raises
    ------
    ValueError
        Naming the memory needed, the budget, the largest P that fits and what to change.
    """
    budget_gb = default_budget_gb(device) if memory_gb is None else float(memory_gb)
    budget = budget_gb * 2**30
    held = held_bytes(p, q, rates, u_nodes, parts)
    need = held + _one_row_bytes(p, parts, lags)
    if need > budget:
        fit = largest_points(q, rates if rates_at_most is None else rates_at_most, u_nodes, parts, lags, budget)
        what = "theory.memory_gb" + ("" if memory_gb is not None else f" (unset: {SAFE_FRACTION:g} of the "
                                                                        f"{available_gb(device):.1f} GB free)")
        raise ValueError(
            f"the theory for P={p} training points needs {need / 2**30:.3g} GB ({rates} rates x {u_nodes} u-nodes "
            f"x {p + q} x {p} coefficients per kernel, float64) but {what} is {budget_gb:.3g} GB: at most P={fit} "
            f"fits; raise theory.memory_gb, use fewer points (task.n_per_class)"
            + (", or sigma0 = sigma (one u-node)" if u_nodes > 1 else "")
            + ", or a looser theory.tol (fewer rates)")
    return max(budget - held, math.ceil(_one_row_bytes(p, parts, lags)))
