"""The theory's memory budget (theory/memory.py) and the blocked kernel fit (expansion.block_rows)."""
from __future__ import annotations

import re
import time

import pytest
import torch

from driftsim.prior import Prior
from driftsim.tasks import make_task
from driftsim.theory.discretisation import discretise
from driftsim.theory.expansion import expand
from driftsim.theory.kernels import KernelModel
from driftsim.theory.memory import held_bytes, largest_points
from driftsim.times import record_times

PRIOR = Prior(T=1e-2, sigma=1.0, sigma0=0.7)


def test_blocks_of_rows_fit_the_same_expansion():
    """The fit of every pair at once and one row at a time: the same least squares. A row's own inner
    product rounds differently in a 1-row product, and relu's arccos turns that into ~1e-8 at cos = 1, which
    the ill-conditioned exponential basis passes to the coefficients: compare the fitted kernels."""
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = KernelModel("relu", 2, PRIOR)
    whole = expand(model, x, x[:4], t_span=300.0, tau_min=1e-2, u_nodes=3, parts=("ndk", "kgp"))
    rows = expand(model, x, x[:4], t_span=300.0, tau_min=1e-2, u_nodes=3, parts=("ndk", "kgp"), block_bytes=1)
    rho = torch.exp(-PRIOR.gamma * torch.logspace(-2, 2.5, 50, dtype=torch.float64))
    for a, b in zip(whole, rows):
        fitted = [torch.einsum("nk,kmpq->nmpq", rho[:, None] ** e.alpha[None, :], e.coef) for e in (a, b)]
        torch.testing.assert_close(fitted[0], fitted[1], rtol=0, atol=1e-7 * float(fitted[0].abs().max()))
        assert a.fit_error == pytest.approx(b.fit_error, rel=1e-2, abs=1e-8)


def test_largest_points_is_the_edge_of_the_budget():
    budget = 3e8
    p = largest_points(20, 45, 1, 1, 361, budget)
    assert held_bytes(p, 20, 45, 1, 1) <= budget < held_bytes(p + 1, 20, 45, 1, 1) + 8 * 16 * 361 * (p + 1)


def test_a_problem_over_the_budget_fails_at_once_naming_the_largest_p_that_fits():
    task = make_task("digits", classes=[0, 1], n_per_class=60, n_test=10, seed=0)  # P = 120
    problem = dict(depth=3, activation="relu", prior=PRIOR, t_learn=record_times(2500.0, 10), tol=1e-4)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"needs .* GB .* theory.memory_gb is 0.005 GB: at most P=\d+ fits") as e:
        discretise(task.x_train, task.x_test, memory_gb=0.005, **problem)
    assert time.perf_counter() - start < 5
    fits = int(re.search(r"at most P=(\d+)", str(e.value)).group(1))
    assert 0 < fits < 120
    # the P it names does fit that budget
    small = make_task("digits", classes=[0, 1], n_per_class=fits // 2, n_test=10, seed=0)
    disc = discretise(small.x_train, small.x_test, memory_gb=0.005, **problem)
    assert disc.ndk.coef.shape[2:] == (small.x_train.shape[0] + 10, small.x_train.shape[0])
