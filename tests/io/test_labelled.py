"""Run files as labelled arrays (driftsim.io.axes, driftsim.io.labelled): xarray opens every group of a
run file, every axis is named, the time coordinates are the stored times, the values the stored arrays."""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from driftsim.io import axes, labelled, store

sys.path.insert(0, str(Path(__file__).parent))
from test_store import N0, E, P, Q, U, fake_run


def _groups_and_datasets(path):
    groups, datasets = ["/"], []
    with h5py.File(path) as h5:
        h5.visititems(lambda n, o: (groups if isinstance(o, h5py.Group) else datasets).append("/" + n))
    return groups, datasets


@pytest.mark.parametrize("mode,t0", [("both", 5.0), ("theory", None)])
def test_every_group_opens_with_named_axes_and_stored_times(tmp_path, mode, t0):
    path = store.write_run(tmp_path / "run.h5", **fake_run(mode, t0))
    run = store.read_run(path, activity=True)
    groups, datasets = _groups_and_datasets(path)
    seen = set()
    for group in groups:
        ds = xr.open_dataset(path, group=group, engine="h5netcdf")  # what a user types, no driftsim
        assert not [d for d in ds.dims if str(d).startswith("phony")], (group, ds.dims)
        for name, var in ds.variables.items():
            key = f"{group.rstrip('/')}/{name}"
            if key in run:
                np.testing.assert_array_equal(var.values, run[key], err_msg=key)
                seen.add(key)
        if "t" in ds.coords:  # a copy in decode and hist groups: the times of their phase
            phase = group.replace("/decode", "").replace("/hist", "")
            np.testing.assert_array_equal(ds["t"].values, run[f"{phase}/t"], err_msg=group)
        ds.close()
    assert seen == {d for d in datasets if d in run}  # every stored array came back through xarray


def test_axes_of_the_layout(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("both"))
    sim = labelled.open_group(path, "/sim/drift")
    assert sim["f_train"].dims == ("t", "network", "train_point") and sim.attrs["t0"] == 5.0
    assert dict(sim.sizes) == {"t": 4, "network": E, "train_point": P, "test_point": Q}
    act = labelled.open_group(path, "/sim/activity/learn")
    assert act["test"].dims == ("t", "network", "test_point", "unit") and act.sizes["unit"] == U
    assert labelled.open_group(path, "/theory/kernels")["ntk"].dims == ("point", "point2")
    assert labelled.open_group(path, "/task")["x_train"].dims == ("train_point", "input")
    hist = labelled.open_group(path, "/hist/theory/drift")
    assert hist["counts"].dims == ("t", "class", "bin") and hist.sizes["edge"] == hist.sizes["bin"] + 1
    root = labelled.open_group(path)
    np.testing.assert_array_equal(root["input"], np.arange(N0))
    everything = labelled.read_datasets(path)
    assert "/theory/drift" in everything and "/decode/sim/drift" in everything and "/theory" not in everything
    np.testing.assert_array_equal(everything["/decode/sim/drift"]["t"], sim["t"])


def test_the_reader_names_what_is_wrong(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("theory", None))
    with pytest.raises(KeyError, match=r"no group '/sim/drift'.*'/theory/learn'"):
        labelled.open_group(path, "/sim/drift")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.arange(3)
    with pytest.raises(store.StoreError, match="not a driftsim run"):
        labelled.read_datasets(foreign)


def test_files_written_before_the_axes_still_open():
    fixture = Path(__file__).parents[1] / "fixtures" / "debug_both_v0.1.0.h5"
    ds = labelled.open_group(fixture, "/theory/learn")
    assert ds["f_train"].shape[0] == ds["t"].shape[0]  # anonymous axes, the same arrays


def _add_recordings(path, S=3, A=2, C=5, R=2):
    """Recordings and metrics with the shapes of DESIGN.md "Drift metrics and recordings", labelled as
    the writer labels them."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "a") as h5:
        for source in ("theory", "sim"):
            h5[f"/observe/{source}/t"] = np.linspace(0.0, 10.0, S)
            h5[f"/observe/{source}/responses"] = rng.poisson(3.0, (S, A, C, P + Q, R)).astype(float)
            h5[f"/metrics/{source}/pv_correlation"] = rng.random((A, S, S))
            h5[f"/metrics/{source}/decoder_fixed"] = rng.random((A, S))
        h5["/theory/drift/population/pv_correlation"] = rng.random((S, S))
        h5["/theory/drift/population/similarity"] = rng.random((S, P + Q, P + Q))
        axes.label_axes(h5)


def test_recordings_and_metrics_have_sessions_with_their_times(tmp_path):
    path = store.write_run(tmp_path / "run.h5", **fake_run("both"))
    _add_recordings(path)
    obs = labelled.open_group(path, "/observe/sim")
    assert obs["responses"].dims == ("session", "subject", "cell", "stimulus", "trial")
    np.testing.assert_array_equal(obs["responses"]["t"], np.linspace(0.0, 10.0, 3))  # times along session
    metrics = labelled.open_group(path, "/metrics/theory")
    assert metrics["pv_correlation"].dims == ("subject", "session", "session2")
    np.testing.assert_array_equal(metrics["decoder_fixed"]["t"], obs["t"])
    population = labelled.open_group(path, "/theory/drift/population")
    assert population["similarity"].dims == ("session", "stimulus", "stimulus2")
    np.testing.assert_array_equal(population["pv_correlation"]["t"], obs["t"])
    for group, ds in labelled.read_datasets(path).items():
        assert not [d for d in ds.dims if str(d).startswith("phony")], group
