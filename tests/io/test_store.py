"""The HDF5 store (DESIGN.md "HDF5 layout", driftsim.io.store): round trip, atomic writes, refusal of
foreign, corrupt and other-schema files, and the tidy table of a sweep."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from driftsim.analysis import sweeps
from driftsim.io import store
from driftsim.config import DriftsimConfig
from driftsim.analysis.decode import decode_sim, decode_theory
from driftsim.results import (Equilibrium, Observed, PopulationTheory, SimPhase, SimResult, TheoryDrift, TheoryLearn,
                              TheoryResult)

P, Q, N0, E, U = 6, 3, 8, 5, 4
TIMES = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=torch.float64)  # n = m = 4


def _config(mode: str, t0, T: float = 1e-3) -> str:
    cfg = OmegaConf.structured(DriftsimConfig)
    cfg.mode, cfg.protocol.t0, cfg.dynamics.T = mode, t0, T
    return OmegaConf.to_yaml(cfg, resolve=True)


def fake_run(mode: str = "both", t0=5.0, seed: int = 0, activity: bool = True):
    """Random stand-ins with the shapes theory, simulation and tasks hand to the store."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    y = torch.tensor([1.0, -1.0] * (P // 2), dtype=torch.float64)
    task = SimpleNamespace(name="synthetic", x_train=r(P, N0), y_train=y, x_test=r(Q, N0),
                           y_test=torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64), classes=(0, 1),
                           train_indices=np.arange(P), test_indices=np.arange(Q), source="generated")
    n = len(TIMES)
    theory = sim = None
    if mode in ("theory", "both"):
        drift = None if t0 is None else TheoryDrift(t0, TIMES, r(n, P), r(n, Q), r(P), r(Q))
        theory = TheoryResult(learn=TheoryLearn(TIMES, r(n, P), r(n, Q), r(n, P), r(n, Q)),
                              nngp=Equilibrium(r(P), r(Q)), ntk=Equilibrium(r(P), r(Q)),
                              kernel_nngp=r(P + Q, P + Q), kernel_ntk=r(P + Q, P + Q), drift=drift, grid_size=17)
    if mode in ("sim", "both"):
        def phase():
            act = (r(n, E, P, U), r(n, E, Q, U)) if activity else (None, None)
            return SimPhase(TIMES, r(n, E, P).float(), r(n, E, Q).float(), *act)
        sim = SimResult(learn=phase(), drift=None if t0 is None else phase(), t0=t0, info={"scheme": "langevin"})
    decoding = {}
    for source, result, fn in (("theory", theory, decode_theory), ("sim", sim, decode_sim)):
        if result is not None:
            decoding.update({(source, p): d for p, d in fn(result, y.numpy(), cv_folds=3, bins=7).items()})
    return dict(config=_config(mode, t0), seed=seed, task=task, theory=theory, sim=sim, decoding=decoding)


@pytest.mark.parametrize("mode,t0", [("theory", None), ("theory", 5.0), ("sim", 5.0), ("both", 5.0)])
def test_round_trip(tmp_path, mode, t0):
    run = fake_run(mode, t0)
    path = store.write_run(tmp_path / "sub" / "run.h5", **run)
    assert path == tmp_path / "sub" / "run.h5" and store.is_complete(path)
    assert not list(path.parent.glob(".*partial"))
    back = store.read_run(path)
    for p in store.required_paths(mode, t0 is not None):
        assert p in back, p
    root = back.attrs["/"]
    assert root["schema"] == "driftsim/1" and root["seed"] == 0 and root["created"]
    assert back.config["mode"] == mode and back.config["protocol"]["t0"] == t0
    assert back.attrs["/task"]["name"] == "synthetic" and list(back.attrs["/task"]["classes"]) == [0, 1]
    np.testing.assert_array_equal(back.attrs["/task"]["indices"], np.arange(P))
    np.testing.assert_array_equal(back["/task/x_train"], run["task"].x_train.numpy())
    if run["theory"] is not None:
        th = run["theory"]
        np.testing.assert_array_equal(back["/theory/learn/f_test"], th.learn.f_test.numpy())
        np.testing.assert_array_equal(back["/theory/kernels/ntk"], th.kernel_ntk.numpy())
        assert back["/theory/learn/f_ntk_test"].shape == (4, Q) and back["/theory/nngp/f_test"].shape == (Q,)
        if t0 is not None:
            assert back.attrs["/theory/drift"]["t0"] == t0 and back["/theory/drift/f_inf_train"].shape == (P,)
            assert back["/decode/theory/drift/accuracy_inf"].shape == ()
    if run["sim"] is not None:
        np.testing.assert_array_equal(back["/sim/drift/f_train"], run["sim"].drift.f_train.numpy())
        assert back["/sim/learn/f_test"].shape == (4, E, Q)
        assert "/sim/activity/drift/train" not in back  # snapshots only on request
        assert store.read_run(path, activity=True)["/sim/activity/drift/train"].shape == (4, E, P, U)
        assert back["/decode/sim/drift/population_fixed"].shape == (4,)
    for source in back.sources:
        for phase in back.phases:
            assert back[f"/hist/{source}/{phase}/counts"].shape == (4, 2, 7)
            assert back[f"/hist/{source}/{phase}/edges"].shape == (8,)
            assert back[f"/decode/{source}/{phase}/accuracy"].shape == (4,)


def test_arrays_are_chunked_along_time_and_compressed(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("both"))
    with h5py.File(path) as h5:
        for name in ("/theory/learn/f_train", "/sim/drift/f_test", "/hist/sim/learn/counts", "/task/x_train"):
            assert h5[name].chunks is not None and h5[name].compression == "gzip", name
        assert h5["/sim/learn/f_train"].chunks[1:] == (E, P)


def test_foreign_hdf5_is_refused(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = np.arange(3)
    with pytest.raises(store.StoreError, match="not a driftsim run.*schema"):
        store.read_run(path)
    assert not store.is_complete(path)


def test_other_schema_is_refused(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("theory"))
    with h5py.File(path, "a") as h5:
        h5.attrs["schema"] = "driftsim/99"
    with pytest.raises(store.StoreError, match="schema 'driftsim/99'.*reads schema 'driftsim/1' only"):
        store.read_run(path)


def test_incomplete_run_is_refused(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("both"))
    with h5py.File(path, "a") as h5:
        del h5["/sim/drift/f_test"]
    with pytest.raises(store.StoreError, match=r"not a complete.*/sim/drift/f_test"):
        store.read_run(path)
    assert not store.is_complete(path)


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_corrupt_file_is_refused(tmp_path, content):
    path = tmp_path / "run.h5"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        match = "not an HDF5 file"
    else:
        whole = store.write_run(tmp_path / "whole.h5", **fake_run("both")).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        match = "truncated or corrupt"
    with pytest.raises(store.StoreError, match=match):
        store.read_run(path)
    assert not store.is_complete(path)
    with pytest.raises(FileNotFoundError, match="no such driftsim run file"):
        store.read_run(tmp_path / "missing.h5")


_SLOW_WRITER = textwrap.dedent("""
    import sys, time, h5py
    sys.path.insert(0, {tests!r})
    from test_store import fake_run
    from driftsim.io import store
    original = store._put
    def slow_put(*args, **kwargs):  # a write that takes long enough to be killed in the middle
        time.sleep(0.05)
        original(*args, **kwargs)
    store._put = slow_put if sys.argv[2] == "slow" else original
    store.write_run(sys.argv[1], **fake_run("both"))
""")


def test_killed_write_leaves_no_file_and_rerun_completes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_SLOW_WRITER.format(tests=os.path.dirname(__file__)))
    final = tmp_path / "out" / "run.h5"
    proc = subprocess.Popen([sys.executable, str(script), str(final), "slow"])
    partial = final.with_name(".run.h5.partial")
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert partial.exists(), "the writer never started its temporary file"
    time.sleep(0.3)  # well inside the write
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert not final.exists()
    subprocess.run([sys.executable, str(script), str(final), "fast"], check=True, timeout=120)
    assert store.is_complete(final) and not partial.exists()


def test_collect_one_row_per_run_source_phase_and_time(tmp_path):
    for i, T in enumerate((1e-3, 1e-2)):
        run = fake_run("both", seed=i)
        run["config"] = _config("both", 5.0, T=T)
        store.write_run(tmp_path / f"job{i}" / "driftsim.h5", **run)
    table = sweeps.collect(tmp_path)
    n = len(TIMES)
    # per run: theory learn + drift, ntk learn, sim learn + drift
    assert len(table) == 2 * 5 * n
    assert "dynamics.T" in table and "model.depth" not in table  # only the swept key
    assert set(table["dynamics.T"]) == {1e-3, 1e-2}
    assert table.groupby(["file", "source", "phase", "t"]).size().eq(1).all()
    drift = table[(table.source == "theory") & (table.phase == "drift")]
    np.testing.assert_allclose(drift.time - drift.t, 5.0)
    assert table.loc[table.source == "ntk", "accuracy"].isna().all()
    assert table.loc[table.source == "sim", "accuracy_population"].notna().all()
    row = table[(table.source == "theory") & (table.phase == "learn")].iloc[1]
    back = store.read_run(row.file)
    f = back["/theory/learn/f_test"][1]
    assert row.test_margin == pytest.approx(np.mean(f * back["/task/y_test"]))
    assert row.test_mse == pytest.approx(np.mean((f - back["/task/y_test"]) ** 2))

    points = sweeps.collect(tmp_path, keys=["task.name"], points=True)
    assert len(points) == 2 * 5 * n * (P + Q) and set(points["task.name"]) == {None}
    sim = points[(points.source == "sim") & (points.split == "train")]
    assert (sim.f_sd > 0).all()


def test_collect_refuses_foreign_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(store.StoreError, match="other.h5"):
        sweeps.collect(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no driftsim run files"):
        sweeps.collect(tmp_path / "empty")


S, A, C, R = 3, 2, 5, 4


def fake_observed(seed: int = 0):
    """Stand-ins for observe + metrics (/observe, /metrics) and theory/population (/theory/drift/population)."""
    rng = np.random.default_rng(seed)
    X = P + Q
    observed = {source: Observed(t=np.array([0.0, 2.0, 4.0]), responses=rng.poisson(3.0, (S, A, C, X, R)).astype(float),
                                 cells=rng.integers(0, 9, (S, A, C)),
                                 metrics={**{k: rng.random((A, S, S)) for k in ("pv_correlation", "rate_correlation",
                                                                                  "tuning_correlation")},
                                          **{k: rng.random((A, S)) for k in ("decoder_fixed", "decoder_retrained")}})
                for source in ("theory", "sim")}
    t = torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)
    r = lambda *shape: torch.as_tensor(rng.random(shape))  # noqa: E731
    population = PopulationTheory(t=t, layer=1, ridge=1e-3, pv_correlation=r(S, S), rate_correlation=r(S, S),
                                  similarity=r(S, X, X), decoder_output=r(S, Q), decoder_fixed=r(S),
                                  decoder_output_inf=r(Q), decoder_fixed_inf=0.5)
    return observed, population


def _observing_config() -> str:
    cfg = OmegaConf.create(_config("both", 5.0))
    cfg.observe.sessions = S
    return OmegaConf.to_yaml(cfg)


def test_observation_round_trip_and_required_paths(tmp_path):
    observed, population = fake_observed()
    run = {**fake_run("both"), "config": _observing_config()}
    path = store.write_run(tmp_path / "run.h5", **run, observed=observed, population=population)
    back = store.read_run(path)
    for p in ["/observe/sim/t", "/metrics/sim/pv_correlation", "/metrics/theory/decoder_fixed",
              "/theory/drift/population/pv_correlation", "/theory/drift/population/similarity",
              "/theory/drift/population/decoder_fixed"]:
        assert p in back, p
    assert "/observe/sim/responses" not in back  # recordings only on request
    full = store.read_run(path, recordings=True)
    np.testing.assert_array_equal(full["/observe/theory/responses"], observed["theory"].responses)
    assert full["/observe/theory/responses"].dtype == np.int32  # counts stored exactly, as integers
    np.testing.assert_array_equal(back["/theory/drift/population/similarity"], population.similarity.numpy())
    assert back.attrs["/theory/drift/population"]["layer"] == 1
    # a run that asks for sessions but lacks them is incomplete
    incomplete = store.write_run(tmp_path / "bad.h5", **run)
    with pytest.raises(store.StoreError, match="/observe/theory/t"):
        store.read_run(incomplete)


def test_staged_responses_are_copied_as_the_run_file_stores_them(tmp_path):
    # the app stages its recordings in the scratch file while their metrics are computed (store.stage_responses);
    # the run file then holds the same dataset as from the array: values, dtype, chunks, filters, checksums
    observed, population = fake_observed()
    run = {**fake_run("both"), "config": _observing_config()}
    direct = store.write_run(tmp_path / "direct.h5", **run, observed=observed, population=population)
    with h5py.File(tmp_path / "scratch.h5", "w") as scratch:
        staged = {source: dataclasses.replace(o, responses=store.stage_responses(
            scratch.create_group(f"observe/{source}"), o.responses)) for source, o in observed.items()}
        copied = store.write_run(tmp_path / "staged.h5", **run, observed=staged, population=population)
    with h5py.File(direct) as a, h5py.File(copied) as b:
        for source in observed:
            d, c = a[f"observe/{source}/responses"], b[f"observe/{source}/responses"]
            np.testing.assert_array_equal(c[()], observed[source].responses)
            assert (c.dtype, c.chunks, c.compression, c.compression_opts, c.shuffle, c.fletcher32) == \
                (d.dtype, d.chunks, d.compression, d.compression_opts, d.shuffle, d.fletcher32) == \
                (np.int32, (S, A, C, P + Q, R), "gzip", 1, True, True)  # small: one chunk
            assert c.id.read_direct_chunk((0,) * 5) == d.id.read_direct_chunk((0,) * 5)  # the same bytes on disk
    store.read_run(copied, recordings=True)  # complete, every axis labelled


def test_observation_with_inconsistent_shapes_is_refused(tmp_path):
    observed, population = fake_observed()
    observed["sim"].metrics["decoder_fixed"] = np.zeros((A, S + 1))
    run = {**fake_run("both"), "config": _observing_config()}
    path = store.write_run(tmp_path / "run.h5", **run, observed=observed, population=population)
    with pytest.raises(store.StoreError, match=r"/metrics/sim/decoder_fixed has shape \(2, 4\)"):
        store.read_run(path)


# ---------- damaged run files: a clear StoreError within a second, from read_run and check_run ----------

def _edit_config(h5, edit) -> None:
    config = OmegaConf.to_container(OmegaConf.create(h5.attrs["config"]))
    edit(config)
    h5.attrs["config"] = OmegaConf.to_yaml(OmegaConf.create(config))


def _replace(h5, name, data=None, group=False) -> None:
    del h5[name]
    if group:
        h5.create_group(name)
    else:
        h5.create_dataset(name, data=data)


def _flip_a_byte(path) -> None:
    with h5py.File(path, "r") as h5:
        chunk = h5["theory/kernels/ntk"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


# a "billion laughs": 6 levels of 9 aliases, ~300 bytes, 9^6 = 531441 strings once expanded
ALIAS_BOMB = "mode: both\nprotocol: {t0: 1.0}\n" + "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 6))

DAMAGES = {
    "group /theory/ntk deleted": (lambda h5: h5.__delitem__("theory/ntk"), r"missing \['/theory/ntk/f_train'"),
    "drift t0 deleted": (lambda h5: h5["theory/drift"].attrs.__delitem__("t0"),
                         r"/theory/drift has attribute t0=None; expected the freeze time"),
    "config without dynamics": (lambda h5: _edit_config(h5, lambda c: c.pop("dynamics")),
                                r"not the config of a driftsim run: the section\(s\) \['dynamics'\] are missing"),
    "mode bogus": (lambda h5: _edit_config(h5, lambda c: c.update(mode="bogus")), r"mode='bogus', not one of"),
    "config not YAML": (lambda h5: h5.attrs.__setitem__("config", "mode: [unclosed"), r"'config' .*unparsable"),
    "alias bomb": (lambda h5: h5.attrs.__setitem__("config", ALIAS_BOMB), r"uses YAML aliases"),
    "wrong shape": (lambda h5: _replace(h5, "theory/learn/f_test", np.zeros((9, 7))),
                    r"/theory/learn/f_test has shape \[9, 7\]; expected \[n=9, Q=\d+\]"),
    "wrong dtype": (lambda h5: _replace(h5, "theory/learn/f_train", np.array([b"x"] * 9)),
                    r"/theory/learn/f_train has dtype \|S1; expected floating-point numbers"),
    "dataset replaced by a group": (lambda h5: _replace(h5, "theory/nngp/f_test", group=True),
                                    r"/theory/nngp/f_test is a Group, expected a dataset"),
    "schema an array": (lambda h5: h5.attrs.__setitem__("schema", np.array([b"driftsim/1", b"x"])),
                        r"has schema array\(\[b'driftsim/1', b'x'\].*reads schema 'driftsim/1' only"),
    "kernel of another size": (lambda h5: _replace(h5, "theory/kernels/ntk", np.zeros((3, 3))),
                               r"/theory/kernels/ntk has shape \[3, 3\]; expected \[P\+Q=\d+, P\+Q=\d+\]"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_run_files_are_refused_naming_what_is_wrong(observed_run, tmp_path, damage):
    import shutil
    edit, message = DAMAGES[damage]
    path = shutil.copy(observed_run, tmp_path / "damaged.h5")
    with h5py.File(path, "r+") as h5:
        edit(h5)
    for read in (store.read_run, store.check_run):
        start = time.perf_counter()
        with pytest.raises(store.StoreError, match=message):
            read(path)
        assert time.perf_counter() - start < 1
    assert not store.is_complete(path)


def test_corrupted_bytes_fail_the_checksum(observed_run, tmp_path):
    import shutil
    path = shutil.copy(observed_run, tmp_path / "flipped.h5")
    with h5py.File(path, "r") as h5:
        assert h5["theory/kernels/ntk"].fletcher32
    _flip_a_byte(path)
    with pytest.raises(store.StoreError, match=r"flipped.h5: data cannot be read \(truncated or corrupt\?\)"):
        store.read_run(path)


def test_a_dataset_declaring_more_than_the_file_holds_is_not_read(observed_run, tmp_path):
    import shutil
    path = shutil.copy(observed_run, tmp_path / "huge.h5")
    with h5py.File(path, "r+") as h5:
        h5.create_dataset("junk", shape=(int(1e11),), dtype=np.float64)  # declared, never written
    assert path.stat().st_size < 2e6
    start = time.perf_counter()
    with pytest.raises(store.StoreError, match=r"/junk declares shape \[100000000000\] of float64 \(800 GB\) but the "
                                               r"file stores 0 bytes"):
        store.read_run(path)
    assert time.perf_counter() - start < 1


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(store.StoreError, match="is a directory, not a driftsim run file"):
        store.read_run(tmp_path)
