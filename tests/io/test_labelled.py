"""Run files as labelled arrays (driftsim.io.axes, driftsim.io.labelled): xarray opens every group of a
run file, every axis is named, the time coordinates are the stored times, the values the stored arrays."""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from driftsim.io import labelled, store

sys.path.insert(0, str(Path(__file__).parent))
from test_store import N0, E, P, Q, U, fake_run


def _groups_and_datasets(path):
    groups, datasets = ["/"], []
    with h5py.File(path) as h5:
        h5.visititems(lambda n, o: (groups if isinstance(o, h5py.Group) else datasets).append("/" + n))
    return groups, datasets


def _every_group_opens_labelled(path):
    """xarray opens every group of ``path`` with every axis named; each stored array comes back; each
    time coordinate is the stored times (decode and hist groups: those of their phase)."""
    run = store.read_run(path, activity=True, recordings=True)
    groups, datasets = _groups_and_datasets(path)
    seen = set()
    for group in groups:
        with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:  # what a user types, no driftsim
            assert not [d for d in ds.dims if str(d).startswith("phony")], (group, ds.dims)
            for name, var in ds.variables.items():
                key = f"{group.rstrip('/')}/{name}"
                if key in run:
                    np.testing.assert_array_equal(var.values, run[key], err_msg=key)
                    seen.add(key)
            if "t" in ds.coords and group.startswith(("/decode", "/hist")):
                phase = group.replace("/decode", "").replace("/hist", "")
                np.testing.assert_array_equal(ds["t"].values, run[f"{phase}/t"], err_msg=group)
    assert seen == {d for d in datasets if d in run}  # every stored array came back through xarray


@pytest.mark.parametrize("mode,t0", [("both", 5.0), ("theory", None)])
def test_every_group_opens_with_named_axes_and_stored_times(tmp_path, mode, t0):
    _every_group_opens_labelled(store.write_run(tmp_path / "run.h5", **fake_run(mode, t0)))


def test_every_group_of_an_observed_run_opens_with_named_axes(observed_run):
    _every_group_opens_labelled(observed_run)


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


def test_recordings_and_metrics_have_sessions_with_their_times(observed_run):
    run = store.read_run(observed_run, recordings=True)
    for source in ("theory", "sim"):
        obs = xr.open_dataset(observed_run, group=f"/observe/{source}", engine="h5netcdf")
        assert obs["responses"].dims == ("session", "subject", "cell", "stimulus", "trial")
        np.testing.assert_array_equal(obs["responses"]["t"], run[f"/observe/{source}/t"])  # times along session
        np.testing.assert_array_equal(obs["responses"], run[f"/observe/{source}/responses"])
        assert obs["cells"].dims == ("session", "subject", "cell")
        obs.close()
        metrics = labelled.open_group(observed_run, f"/metrics/{source}")
        assert metrics["pv_correlation"].dims == ("subject", "session", "session2")
        assert metrics["decoder_fixed"].dims == ("subject", "session")
        assert metrics["similarity"].dims == ("subject", "session", "stimulus", "stimulus2")
    population = labelled.open_group(observed_run, "/theory/drift/population")
    assert population["similarity"].dims == ("session", "stimulus", "stimulus2")
    np.testing.assert_array_equal(population["pv_correlation"]["t"], run["/observe/theory/t"])
