"""Recordings out and in (driftsim.io.export, nwb, recordings): a run's observed population → NWB / netCDF →
load_recording gives the same array and the same drift metrics as the run file; NWB files pass
nwbinspector; lab-style files (sessions in separate files, cell ids) load; bad input is named."""
from __future__ import annotations

import datetime

import h5py
import numpy as np
import pytest
import xarray as xr
import yaml

from driftsim import __version__
from driftsim.analysis import metrics
from driftsim.export_cli import main as export_main
from driftsim.io import export, load_recording, recordings, store

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def _stored_metrics(path, source, network):
    with h5py.File(path) as h5:
        return {k: h5[f"metrics/{source}/{k}"][network] for k in
                ("pv_correlation", "rate_correlation", "tuning_correlation", "rsa_stability")}


def _metrics_of(rec):
    return {"pv_correlation": metrics.pv_correlation(rec).values, "rate_correlation": metrics.rate_correlation(rec).values,
            "tuning_correlation": metrics.tuning_correlation(rec).values,
            "rsa_stability": metrics.rsa_stability(rec).values}


@pytest.fixture(scope="module")
def exported(observed_run, tmp_path_factory):
    pytest.importorskip("pynwb")
    out = tmp_path_factory.mktemp("exported")
    return {to: export.export_run(observed_run, out / to, to) for to in ("nwb", "netcdf")}


def test_round_trip_gives_the_run_files_metrics(observed_run, exported):
    names = {p.name for p in exported["nwb"]}
    assert names == {f"run_{s}_network{a}.{ext}" for s in ("theory", "sim") for a in (0, 1) for ext in ("nwb", "yaml")}
    with h5py.File(observed_run) as h5:
        stored_t = {s: h5[f"observe/{s}/t"][()] for s in ("theory", "sim")}
    for source in ("theory", "sim"):
        for network in (0, 1):
            original = recordings.recording_from_run(observed_run, source, network)
            stored = _stored_metrics(observed_run, source, network)
            for to, ext in (("nwb", "nwb"), ("netcdf", "nc")):
                back = load_recording(next(p for p in exported[to] if p.name == f"run_{source}_network{network}.{ext}"))
                assert back.dims == ("session", "cell", "stimulus", "trial") and back.attrs["cells_dropped"] == 0
                np.testing.assert_array_equal(back.values, original.values)
                np.testing.assert_array_equal(back["time"].values, stored_t[source])
                np.testing.assert_array_equal(back["label"].values, original["label"].values)
                for name, value in _metrics_of(back).items():  # the metrics the run computed when it observed
                    np.testing.assert_allclose(value, stored[name], rtol=0, atol=1e-12, err_msg=f"{to} {name}")


def test_nwb_files_pass_nwbinspector_and_carry_the_run(observed_run, exported):
    nwbinspector = pytest.importorskip("nwbinspector")
    import pynwb

    bad = {"CRITICAL", "BEST_PRACTICE_VIOLATION"}
    config = yaml.safe_load(store.read_run(observed_run).attrs["/"]["config"])
    for path in (p for p in exported["nwb"] if p.suffix == ".nwb"):
        messages = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path)))
        assert not [m.message for m in messages if m.importance.name in bad], path
        with pynwb.NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            assert nwb.subject.species.endswith("NCBITaxon_32630") and nwb.subject.sex == "U" and nwb.subject.age
            assert len(nwb.epochs) == 4 and set(nwb.trials.colnames) >= {"stimulus", "label", "session", "repeat"}
            assert nwb.acquisition["responses"].data.shape == (4 * 3 * 5, 20)  # time first: S·R·X trials × C
            assert f"driftsim {__version__}" in nwb.notes and "observe:" in nwb.notes
        sidecar = yaml.safe_load(path.with_suffix(".yaml").read_text())
        assert sidecar["config"] == config and sidecar["driftsim_version"] == __version__


def test_session_times_convert_to_other_units(exported):
    path = next(p for p in exported["nwb"] if p.suffix == ".nwb")
    seconds, days = load_recording(path), load_recording(path, time_unit="day")
    assert seconds["time"].attrs["units"] == "s" and days["time"].attrs["units"] == "day"
    np.testing.assert_allclose(days["time"].values * 86400, seconds["time"].values)
    with pytest.raises(ValueError, match="time_unit='week' is not allowed"):
        load_recording(path, time_unit="week")
    nc = next(p for p in exported["netcdf"])
    with pytest.raises(ValueError, match="units 'model time.*cannot be converted"):
        load_recording(nc, time_unit="day")


def _per_session_files(tmp_path, rec, cells_of, ids=True, renumber=True):
    """A lab's layout: one NWB file per session, each with its own cells (``cells_of[s]``)."""
    from driftsim.io import nwb

    files = []
    for s, cells in enumerate(cells_of):
        one = rec.isel(session=[s], cell=cells).assign_coords(session=[s])
        path = nwb.write_nwb(one, tmp_path / f"session{s}.nwb", subject_id="m1", session_start_time=NOW,
                             notes="", description=f"session {s}")
        with h5py.File(path, "a") as h5:  # each file's session keeps its own id in the trials table
            if renumber:
                h5["intervals/trials/session"][...] = s
                h5["intervals/epochs/session"][...] = s
            if not ids:
                del h5["acquisition/cells"]  # a file that does not say which cells its columns are
        files.append(path)
    return files


def test_sessions_in_separate_files_join_by_cell_ids(observed_run, tmp_path):
    pytest.importorskip("pynwb")
    rec = recordings.recording_from_run(observed_run, "sim", 0)
    cells_of = [list(range(20)), list(range(2, 20)), [19, *range(1, 19)], list(range(20))]  # lost cells, reordered
    back = load_recording(_per_session_files(tmp_path, rec, cells_of))
    np.testing.assert_array_equal(back["cell"], np.arange(2, 20))  # the cells of every session
    np.testing.assert_array_equal(back.values, rec.sel(cell=np.arange(2, 20)).values)
    with pytest.raises(ValueError, match="different numbers of cells.*no cell ids"):
        load_recording(_per_session_files(tmp_path, rec, cells_of, ids=False))
    with pytest.raises(ValueError, match="session 0 is in .*session0.nwb and in .*session1.nwb"):
        load_recording(_per_session_files(tmp_path, rec, cells_of, renumber=False))


def test_bad_recordings_are_named(observed_run, tmp_path):
    pynwb = pytest.importorskip("pynwb")
    bare = pynwb.NWBFile(session_description="d", identifier="x", session_start_time=NOW)
    bare.add_acquisition(pynwb.TimeSeries(name="dff", data=np.zeros((10, 3)), unit="a.u.", rate=1.0))
    with pynwb.NWBHDF5IO(str(tmp_path / "no_trials.nwb"), "w") as io:
        io.write(bare)
    with pytest.raises(ValueError, match="no trials table"):
        load_recording(tmp_path / "no_trials.nwb")
    bare = pynwb.NWBFile(session_description="d", identifier="y", session_start_time=NOW)
    bare.add_trial_column("stimulus", "s")
    bare.add_trial(start_time=0.0, stop_time=1.0, stimulus=0)
    with pynwb.NWBHDF5IO(str(tmp_path / "no_session.nwb"), "w") as io:
        io.write(bare)
    with pytest.raises(ValueError, match=r"no column \['session'\]"):
        load_recording(tmp_path / "no_session.nwb")

    rec = recordings.recording_from_run(observed_run, "theory", 1)
    renamed = rec.rename(cell="neuron")
    recordings.write_netcdf(renamed, tmp_path / "dims.nc")
    with pytest.raises(ValueError, match=r"lacks the dims \['cell'\]"):
        load_recording(tmp_path / "dims.nc")
    recordings.write_netcdf(rec.drop_vars("time"), tmp_path / "no_time.nc")
    with pytest.raises(ValueError, match="no coordinate 'time'"):
        load_recording(tmp_path / "no_time.nc")
    xr.Dataset({"a": rec, "b": rec}).to_netcdf(tmp_path / "two.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="no variable 'responses' and 2 others"):
        load_recording(tmp_path / "two.nc")
    with pytest.raises(FileNotFoundError, match="no such recording file"):
        load_recording(tmp_path / "missing.nwb")
    with pytest.raises(ValueError, match="no observed population of source 'nope'"):
        recordings.recording_from_run(observed_run, "nope", 0)
    with pytest.raises(ValueError, match="network=2 is not one of the 2 observed networks"):
        recordings.recording_from_run(observed_run, "sim", 2)


def test_export_command(observed_run, tmp_path, capsys):
    assert export_main([str(observed_run), "--to", "netcdf", "--out", str(tmp_path), "--source", "sim"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(tmp_path / f"run_sim_network{a}.nc") for a in (0, 1))
    assert xr.open_dataset(printed[0], engine="h5netcdf").attrs["driftsim_version"] == __version__

    plain = store.write_run(tmp_path / "plain.h5", **_fake_theory_run())
    assert export_main([str(plain), "--to", "netcdf", "--out", str(tmp_path)]) == 2
    assert "holds no observed population" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing.h5"), "--out", str(tmp_path)]) == 2
    assert "no such driftsim run file" in capsys.readouterr().err


def _fake_theory_run():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_store import fake_run

    return fake_run("theory", 5.0)
