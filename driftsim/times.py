"""Recorded times, shared by theory and simulation so that both log the same instants."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .validation import integer, positive

__all__ = ["record_times", "check_times"]


def record_times(t_end: float, n: int, t_first: float | None = None) -> Tensor:
    """t = 0 followed by n log-spaced times from t_first to t_end (float64, shape [n + 1]).

    t_first defaults to min(1e-2, t_end·1e-6): early enough to see the gradient phase start.
    """
    positive("t_end", t_end)
    integer("n", n, 1)
    t_first = min(1e-2, t_end * 1e-6) if t_first is None else t_first
    if not 0 < t_first <= t_end:
        raise ValueError(f"t_first={t_first!r} must lie in (0, t_end={t_end!r}]")
    logs = torch.linspace(math.log10(t_first), math.log10(t_end), n, dtype=torch.float64)
    times = torch.cat([torch.zeros(1, dtype=torch.float64), 10.0 ** logs])
    times[-1] = t_end  # exactly: 10**log10(t_end) can miss it by an ulp, and t0 = t_end must lie inside
    return times


def check_times(name: str, t: Tensor, from_zero: bool = False) -> Tensor:
    """``t`` as a float64 CPU tensor [n] after checking it: non-empty, finite, >= 0, strictly increasing,
    and starting at 0 if ``from_zero``; else a ValueError naming ``name`` and what is allowed."""
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    ok = (t.dim() == 1 and t.numel() > 0 and bool(torch.isfinite(t).all()) and bool(t.min() >= 0)
          and not bool((t.diff() <= 0).any()) and (not from_zero or t[0] == 0))
    if not ok:
        start = "starting at 0, " if from_zero else ""
        raise ValueError(f"{name} must be a 1-D, non-empty array of finite times >= 0, {start}strictly increasing; "
                         f"got {t.tolist() if t.numel() <= 8 else tuple(t.shape)}")
    return t
