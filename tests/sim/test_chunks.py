"""The ensemble in chunks (sim.chunk, ``simulate``): a chunk is a whole simulation of its networks from its own
seeds, written into its slice of the records; an ensemble within one chunk is the run of before chunking
(tests/io/test_fixture.py recomputes a committed run), and chunks are independent yet reproducible."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch

from driftsim.analysis.decode import decode_sim

from driftsim.prior import Prior
from driftsim.sim.simulate import SessionRequest, simulate
from driftsim.tasks import synthetic_task
from driftsim.times import record_times

TASK = synthetic_task(4, 0.75)
T_DRIFT = record_times(2.0, 4, t_first=0.1)
SESSIONS = SessionRequest(T_DRIFT[[0, 2, 4]], layer=1, networks=6, units=3)  # session times among the recorded


def _run(ensemble, chunk, scheme="langevin", sessions=None, antithetic=False, width=16, records=None):
    """Synthetic task (P = 4, Q = 1), depth 1 erf, γ = 0.25, learning to t = 2 with a freeze at 1."""
    return simulate(TASK.x_train, TASK.y_train, TASK.x_test, depth=1, activation="erf", width=width,
                    prior=Prior(0.25, 1.0, 1.0), t_learn=record_times(2.0, 4, t_first=0.1), t0=1.0, t_drift=T_DRIFT,
                    scheme=scheme, dt=0.05, lam=20.0, ensemble=ensemble, chunk=chunk, antithetic=antithetic,
                    activity_units=4, seed=3, device="cpu", progress=False, sessions=sessions, records=records)


def _records(res) -> dict[str, torch.Tensor]:
    """Every per-network record, networks along dimension 1."""
    out = {}
    for name, phase in (("learn", res.learn), ("drift", res.drift)):
        for key in ("f_train", "f_test", "activity_train", "activity_test"):
            out[f"{name}.{key}"] = getattr(phase, key)
    if res.sessions is not None:
        out["sessions"] = res.sessions.activity
    return out


def _networks(records: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    return {k: v[:, lo:hi] for k, v in records.items() if k != "sessions"}


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_an_ensemble_within_one_chunk_is_the_same_whatever_the_chunk():
    one, larger = _run(6, 6, sessions=SESSIONS), _run(6, 1024, sessions=SESSIONS)
    assert _equal(_records(one), _records(larger))
    assert one.info["chunks"] == larger.info["chunks"] == 1
    assert one.info["ntk_max_eig"] == larger.info["ntk_max_eig"]


def test_chunks_after_the_first_are_independent_and_reproducible():
    whole, again, first = _run(12, 4, sessions=SESSIONS), _run(12, 4, sessions=SESSIONS), _run(4, 1024)
    rec = _records(whole)
    assert _equal(rec, _records(again))  # reproducible across calls
    assert _equal(_networks(rec, 0, 4), _records(first))  # chunk 0: the E = 4 run
    chunks = [_networks(rec, lo, lo + 4) for lo in (0, 4, 8)]
    for a, b in ((0, 1), (0, 2), (1, 2)):  # own streams: from the initialisation on
        assert not torch.equal(chunks[a]["learn.f_train"][0], chunks[b]["learn.f_train"][0])
    assert whole.info["chunks"] == 3 and whole.info["steps"] == first.info["steps"]
    assert whole.info["ntk_max_eig"] >= first.info["ntk_max_eig"]
    # the sessions' networks 0..5 span chunks 0 and 1: each at its place, the last layer's recorded activity
    drift_act = torch.cat([whole.drift.activity_train, whole.drift.activity_test], dim=2)  # [m, E, X, U]
    at = drift_act[[0, 2, 4], :SESSIONS.networks, :, :SESSIONS.units].transpose(2, 3)
    assert torch.equal(whole.sessions.activity, at)


def test_antithetic_pairs_stay_in_a_chunk_and_an_odd_chunk_is_refused():
    res = _run(8, 4, antithetic=True)
    f0 = res.learn.f_train[0]
    assert torch.equal(f0[1::2], -f0[0::2]) and not torch.equal(f0[:4], f0[4:])
    with pytest.raises(ValueError, match=r"sim.chunk=3 is not allowed: an even number when sim.antithetic=true"):
        _run(8, 3, antithetic=True)


def test_mpl_acceptance_counts_over_all_chunks():
    res = _run(8, 4, scheme="mpl")
    assert res.info["chunks"] == 2 and 0.5 < res.info["mpl_acceptance"] <= 1


def test_the_chunked_mean_predictor_agrees_with_the_unchunked_within_monte_carlo_error():
    E, chunk = 64, 16
    chunked, whole = _run(E, chunk, width=32), _run(E, E, width=32)
    for key in ("learn.f_train", "learn.f_test", "drift.f_test"):
        a, b = _records(chunked)[key].double(), _records(whole)[key].double()
        se = (a.var(1) / E + b.var(1) / E).sqrt()
        assert ((a.mean(1) - b.mean(1)).abs() <= 4 * se).all(), key
    # chunks that shared their noise would have equal means: their spread is that of E/chunk
    # independent means (χ² with 3 degrees of freedom above its 0.1 % quantile, 0.024)
    f = _records(chunked)["learn.f_test"][-1, :, 0].double()
    means = f.view(E // chunk, chunk).mean(1)
    assert means.var() / (f.var() / chunk) > 0.024 / 3


@pytest.mark.parametrize("scheme", ["langevin", "mpl"])
def test_records_streamed_to_a_file_are_the_records_held_in_memory(tmp_path, scheme):
    """records=<h5py group>: each chunk's slice of each time is written to the file as it is recorded (the app's
    spool), the same numbers as the tensors of a run that holds them; decoding reads them one time at a time."""
    held = _run(10, 4, scheme, sessions=SESSIONS)
    with h5py.File(tmp_path / "spool.h5", "w") as f:
        streamed = _run(10, 4, scheme, sessions=SESSIONS, records=f)
        for name, value in _records(streamed).items():
            if name != "sessions":  # the observed networks' activity stays in memory
                assert isinstance(value, h5py.Dataset), name
            assert torch.equal(torch.as_tensor(value[()]), _records(held)[name]), name
        assert sorted(f) == ["drift", "learn"] and sorted(f["learn"]) == ["act_test", "act_train", "f_test", "f_train"]
        y = TASK.y_train.numpy()
        for a, b in zip(decode_sim(held, y, cv_folds=2).values(), decode_sim(streamed, y, cv_folds=2).values()):
            assert dataclasses.asdict(a).keys() == dataclasses.asdict(b).keys()
            np.testing.assert_equal(dataclasses.asdict(a), dataclasses.asdict(b))  # exactly; NaN equals NaN
