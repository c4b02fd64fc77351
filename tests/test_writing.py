"""Where a run is written and how (driftsim.io.output, store.check_replaceable; issues 16 and 17, the writing
side): the output path is checked before any work, only driftsim runs are replaced, one writer per file,
Ctrl-C and a full disk leave nothing behind, sweep job folders are safe, and driftsim-plot's --out. In this
process through ``run_driftsim``; subprocesses only for signals and concurrent writers."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from driftsim import app, plot_cli
from driftsim.io import output, store
from driftsim.sim.simulate import _Recorder

DEBUG = ("experiment=debug",)


def leftovers(folder: Path) -> list[str]:
    """Partial, lock and scratch (streamed records) files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".lock", ".records")))


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run gets as far as loading its task."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run started its work before checking its output path")
    monkeypatch.setattr(app, "make_task", refuse)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory, run_driftsim) -> bytes:
    """The bytes of a complete experiment=debug run file."""
    path, _ = run_driftsim(*DEBUG, f"out={tmp_path_factory.mktemp('debug') / 'run.h5'}")
    return path.read_bytes()


# ------------------------------------------------------------------------- 1. the path, before any work

@pytest.mark.parametrize("out, written", [
    ("new/", "new/driftsim.h5"),             # a trailing / names a folder, created
    ("existing", "existing/driftsim.h5"),    # an existing folder
    ("existing/", "existing/driftsim.h5"),
    ("a/b/run.h5", "a/b/run.h5"),            # parents created
])
def test_out_naming_a_folder_puts_the_run_inside_it(tmp_path, monkeypatch, run_driftsim, out, written):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    assert run_driftsim(*DEBUG, f"out={out}", "overwrite=true") == (tmp_path / written, True)
    assert store.is_complete(tmp_path / written) and leftovers((tmp_path / written).parent) == []


def test_out_expands_the_home_folder(tmp_path, monkeypatch, run_driftsim):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert run_driftsim(*DEBUG, "out='~/runs/x.h5'")[0] == tmp_path / "runs" / "x.h5"
    assert not (tmp_path / "~").exists()


def _below_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    return "file.txt/run.h5", r"file.txt/run.h5 cannot be written: \S+/file.txt is a file, not a folder"


def _folder_without_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    (tmp_path / "locked").mkdir(mode=0o500)
    return "locked/run.h5", r"locked/run.h5 cannot be written: Permission denied"


def _read_only_file_system(tmp_path, monkeypatch):
    real = os.open

    def read_only(path, *args, **kwargs):  # what a read-only mount answers to creating a file
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)
    (tmp_path / "ro").mkdir(exist_ok=True)
    monkeypatch.setattr(os, "open", read_only)
    return "ro/run.h5", r"ro/run.h5 cannot be written: Read-only file system"


def _name_too_long(tmp_path):
    return "x" * 250 + ".h5", "cannot be written: File name too long"


@pytest.mark.parametrize("case", [_below_a_file, _folder_without_permission, _read_only_file_system,
                                  _name_too_long])
def test_unwritable_out_fails_in_seconds_before_any_work(tmp_path, monkeypatch, run_driftsim, no_work, case):
    monkeypatch.chdir(tmp_path)
    args = (tmp_path, monkeypatch) if case is _read_only_file_system else (tmp_path,)
    out, message = case(*args)
    start = time.perf_counter()
    with pytest.raises(output.OutputError, match=message):
        run_driftsim(*DEBUG, f"out={out}", "overwrite=true")
    assert time.perf_counter() - start < 5


def test_a_complete_run_in_a_read_only_folder_is_reused(tmp_path, monkeypatch, run_driftsim):
    out = tmp_path / "ro" / "run.h5"
    run_driftsim(*DEBUG, f"out={out}")
    _read_only_file_system(tmp_path, monkeypatch)
    assert run_driftsim(*DEBUG, f"out={out}") == (out, False)
    with pytest.raises(output.OutputError, match="ro/run.h5 cannot be written: Read-only file system"):
        run_driftsim(*DEBUG, f"out={out}", "overwrite=true")


# ------------------------------------------------------------------------- 2. overwrite replaces runs only

def _users_hdf5(path):
    with h5py.File(path, "w") as h5:
        h5["mine"] = np.arange(3)
    return "an HDF5 file without a driftsim schema"


def _users_text(path):
    path.write_text("my notes\n")
    return "not an HDF5 file"


@pytest.mark.parametrize("overwrite", ["overwrite=true", "overwrite=false"])
@pytest.mark.parametrize("make", [_users_hdf5, _users_text])
def test_a_users_file_is_never_replaced(tmp_path, run_driftsim, no_work, make, overwrite):
    mine = tmp_path / "mine.h5"
    kind = make(mine)
    before = mine.read_bytes()
    with pytest.raises(output.OutputError, match=rf"not a driftsim run: {mine} \({kind}\)"):
        run_driftsim(*DEBUG, f"out={mine}", overwrite)
    assert mine.read_bytes() == before and leftovers(tmp_path) == []


def _truncated(path, whole):
    path.write_bytes(whole[: len(whole) // 2])


def _incomplete(path, whole):
    path.write_bytes(whole)
    with h5py.File(path, "a") as h5:
        del h5["theory/kernels/ntk"]


@pytest.mark.parametrize("damage", [_truncated, _incomplete])
def test_overwrite_replaces_a_remnant_of_a_run(tmp_path, run_driftsim, debug_run, damage):
    out = tmp_path / "run.h5"
    damage(out, debug_run)
    assert store.is_run_file(out) and not store.is_complete(out)
    with pytest.raises(ValueError, match="set overwrite=true"):
        run_driftsim(*DEBUG, f"out={out}")
    assert run_driftsim(*DEBUG, f"out={out}", "overwrite=true") == (out, True)
    assert store.is_complete(out)


def test_compute_runs_keeps_a_users_file(tmp_path):
    mine = tmp_path / "job.h5"
    _users_hdf5(mine)
    before = mine.read_bytes()
    with pytest.raises(output.OutputError, match=f"not a driftsim run: {mine}"):
        app.compute_runs(tmp_path, {"job": list(DEBUG)})
    assert mine.read_bytes() == before


def test_compute_runs_reuses_the_same_config_and_recomputes_another(tmp_path):
    first = app.compute_runs(tmp_path, {"job": list(DEBUG)})["job"]
    stamp = (tmp_path / "job.h5").stat().st_mtime_ns
    assert app.compute_runs(tmp_path, {"job": list(DEBUG)})["job"].config == first.config
    assert (tmp_path / "job.h5").stat().st_mtime_ns == stamp
    again = app.compute_runs(tmp_path, {"job": [*DEBUG, "dynamics.T=0.1"]})["job"]
    assert again.config["dynamics"]["T"] == 0.1


# ------------------------------------------------------------------------- 3. one writer per file

def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, run_driftsim, no_work):
    out, holding, release = tmp_path / "run.h5", threading.Event(), threading.Event()

    def first_writer():
        with output.claim(out):
            holding.set()
            release.wait(30)
    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(output.OutputError, match=rf"{out} is being written by another driftsim run "
                                                     rf"\(pid {os.getpid()} on .*, started .*lock file"):
            run_driftsim(*DEBUG, f"out={out}")
    finally:
        release.set()
        thread.join()
    assert leftovers(tmp_path) == [] and not out.exists()


@pytest.mark.parametrize("kind", ["partial", "records"])  # the file being written, the streamed records
def test_a_killed_runs_partial_file_is_replaced_with_a_log_line(tmp_path, run_driftsim, caplog, kind):
    out = tmp_path / "run.h5"
    output.sibling(out, kind).write_bytes(b"half a run")
    output.sibling(out, "lock").write_text("pid 999999 on elsewhere, started 2026-01-01 00:00:00 UTC")
    caplog.set_level("WARNING", logger="driftsim.io.output")
    mode = "mode=sim" if kind == "records" else "mode=theory"  # a simulation streams its own records there
    assert run_driftsim(*DEBUG, mode, f"out={out}") == (out, True)
    assert f"removing {output.sibling(out, kind)}, left by a run that was stopped before it finished " \
           "(pid 999999 on elsewhere" in caplog.text
    assert store.is_complete(out) and leftovers(tmp_path) == []


_WRITERS = textwrap.dedent("""
    # rounds of driftsim jobs (argv: folder, then jobs, rounds separated by "--"), each round's jobs started at
    # the same moment: forked after one import, released together; results in results<round>.jsonl
    import json, os, sys
    from driftsim import app
    os.chdir(sys.argv[1])
    rounds = [[]]
    for arg in sys.argv[2:]:
        if arg == "--":
            rounds.append([])
        else:
            rounds[-1].append(arg.split())
    for n, jobs in enumerate(rounds):
        start_r, start_w = os.pipe()
        children = []
        for i, job in enumerate(jobs):
            pid = os.fork()
            if pid == 0:
                os.dup2(os.open(f"stderr{n}_{i}", os.O_WRONLY | os.O_CREAT), 2)
                os.read(start_r, 1)
                sys.argv = ["driftsim", *job]
                try:
                    app.main()
                    code = 0
                except SystemExit as e:
                    code = e.code
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    code = 1
                sys.stderr.flush()
                os._exit(code)
            children.append(pid)
        os.write(start_w, b"go" * len(jobs))
        with open(f"results{n}.jsonl", "w") as results:  # the jobs' logs go to stdout
            for i, pid in enumerate(children):
                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                stderr = open(f"stderr{n}_{i}").read()
                results.write(json.dumps({"job": " ".join(jobs[i]), "rc": code, "stderr": stderr}) + "\\n")
""")

ROUNDS = {"four different runs": [f"seed={s}" for s in range(4)],
          "six identical runs replacing the file": ["seed=0 overwrite=true"] * 6}


@pytest.fixture(scope="module")
def concurrent_rounds(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """Each round of ROUNDS started at once against its own file: {round: (file, [{job, rc, stderr}])}."""
    folder = tmp_path_factory.mktemp("writers")
    (folder / "writers.py").write_text(_WRITERS)
    args, outs = [], {}
    for n, (name, jobs) in enumerate(ROUNDS.items()):
        outs[name] = folder / f"round{n}" / "shared.h5"
        args += [f"{DEBUG[0]} {job} out={outs[name]} hydra.run.dir={folder}/hydra{n}_{i}" for i, job in enumerate(jobs)]
        args.append("--")
    proc = subprocess.run([sys.executable, str(folder / "writers.py"), str(folder), *args[:-1]], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return {name: (outs[name], [json.loads(line) for line in (folder / f"results{n}.jsonl").read_text().splitlines()])
            for n, name in enumerate(ROUNDS)}


@pytest.mark.parametrize("name", ROUNDS)
def test_concurrent_runs_to_one_file_lose_nothing_silently(concurrent_rounds, name):
    out, results = concurrent_rounds[name]
    assert len(results) == len(ROUNDS[name])
    wrote = [r for r in results if r["rc"] == 0]
    assert len(wrote) >= 1 and all(r["rc"] in (0, 2) for r in results), results
    for r in results:
        if r["rc"] == 2:  # one line: the other writer, or (once it has finished) its file of another config
            assert r["stderr"].count("\n") == 1 and r["stderr"].startswith("driftsim: error: "), r
            assert "being written by another driftsim run" in r["stderr"] or "another config" in r["stderr"], r
        assert "Traceback" not in r["stderr"], r
    if "overwrite" not in ROUNDS[name][0]:  # without overwrite only one run may have its result in the file
        assert len(wrote) == 1 and f"seed={store.read_run(out).config['seed']} " in wrote[0]["job"]
    assert store.is_complete(out) and leftovers(out.parent) == []


# ------------------------------------------------------------------------- 4. Ctrl-C

_SLOW_RUN = textwrap.dedent("""
    # the driftsim command with one slow phase (argv[1]: compute or write), marking its start in argv[2]
    import sys, time
    from pathlib import Path
    from driftsim import app
    from driftsim.io import store
    phase, marker = sys.argv[1], Path(sys.argv[2])
    if phase == "compute":
        def slow_theory(*args, **kwargs):
            marker.touch()
            time.sleep(60)
        app.solve = slow_theory
    elif phase == "simulate":  # after the records were streamed to their scratch file
        simulate = app.simulate
        def slow_simulation(*args, **kwargs):
            simulate(*args, **kwargs)
            marker.touch()
            time.sleep(60)
        app.simulate = slow_simulation
    else:
        put = store._put
        def slow_put(*args, **kwargs):
            marker.touch()
            time.sleep(0.05)
            put(*args, **kwargs)
        store._put = slow_put
    sys.argv = ["driftsim", *sys.argv[3:]]
    app.main()
""")


@pytest.mark.parametrize("phase", ["compute", "simulate", "write"])
def test_ctrl_c_stops_promptly_and_leaves_nothing(tmp_path, phase):
    script, marker, out = tmp_path / "slow.py", tmp_path / "started", tmp_path / "out" / "run.h5"
    script.write_text(_SLOW_RUN)
    mode = ("mode=sim",) if phase == "simulate" else ()
    proc = subprocess.Popen([sys.executable, str(script), phase, str(marker), *DEBUG, *mode, f"out={out}",
                             f"hydra.run.dir={tmp_path}/hydra"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)
    if phase != "compute":
        assert output.sibling(out, "partial" if phase == "write" else "records").exists()
    proc.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    _, err = proc.communicate(timeout=30)
    assert time.perf_counter() - sent < 10
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"driftsim: interrupted; nothing written to {out}"
    assert "Traceback" not in err and "Exception ignored" not in err
    assert not out.exists() and leftovers(out.parent) == []


# ------------------------------------------------------------------------- 5. a full disk

@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    RuntimeError("Disable slist on flush dest failure failed (file write failed: time = now, filename = 'x', "
                 "file descriptor = 4, errno = 28, error message = 'No space left on device', buf = 0x0)"),  # h5py's
])
@pytest.mark.parametrize("where", ["run file", "streamed records"])
def test_a_failed_write_names_the_path_and_keeps_earlier_files(tmp_path, run_driftsim, monkeypatch, failure, where):
    out, other = tmp_path / "run.h5", tmp_path / "other.h5"
    run_driftsim(*DEBUG, f"out={out}")
    run_driftsim(*DEBUG, f"out={other}")
    before = out.read_bytes(), other.read_bytes()

    def disk_full(*args, **kwargs):
        raise failure
    if where == "run file":
        monkeypatch.setattr(store, "_write_task", disk_full)
    else:  # while the simulation streams its records to the scratch file
        monkeypatch.setattr(_Recorder, "_write", disk_full)
    with pytest.raises(output.OutputError, match=rf"^{out} cannot be written: No space left on device; nothing "
                                                 r"written \(a file already there is kept\)$"):
        run_driftsim(*DEBUG, "mode=sim", f"out={out}", "overwrite=true")
    assert (out.read_bytes(), other.read_bytes()) == before and leftovers(tmp_path) == []


# ------------------------------------------------------------------------- 6. sweep job folders

@pytest.mark.parametrize("overrides", [
    "task.root=../../escaped", "task.root=/abs/path", "..", "task.root=a/b",
    ",".join(f"group{i}.some_long_key_name={i * 1e-3}" for i in range(20)),
])
def test_sweep_job_folders_are_one_safe_name(overrides):
    name = output.job_folder(overrides)
    assert "/" not in name and name not in (".", "..") and 0 < len(name) <= 120


def test_sweep_job_folders_are_unique_and_plain_names_kept():
    assert output.job_folder("model.activation=relu,task.classes=[4,9]") == "model.activation=relu,task.classes=[4,9]"
    names = ["task.root=a/b", "task.root=a_b", "task.root=a:b", "x=" + "1" * 200, "x=" + "1" * 199 + "2"]
    assert len({output.job_folder(n) for n in names}) == len(names)


# ------------------------------------------------------------------------- 7. driftsim-plot --out

@pytest.fixture
def run_file(tmp_path, debug_run) -> Path:
    path = tmp_path / "run.h5"
    path.write_bytes(debug_run)
    return path


def _out_is_a_file(tmp_path):
    (tmp_path / "figs").write_text("mine")
    return tmp_path / "figs", f"driftsim-plot: error: {tmp_path}/figs is a file, not a folder"


def _out_read_only(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(output.tempfile, "TemporaryFile", read_only)
    return tmp_path / "figs", f"driftsim-plot: error: {tmp_path}/figs cannot be written: Read-only file system"


@pytest.mark.parametrize("case", [_out_is_a_file, _out_read_only])
def test_plot_out_that_cannot_take_figures_is_one_line(tmp_path, run_file, capsys, monkeypatch, case):
    out, message = case(tmp_path, monkeypatch) if case is _out_read_only else case(tmp_path)
    assert plot_cli.main([str(run_file), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_plot_writes_into_a_new_folder(tmp_path, run_file, capsys):
    assert plot_cli.main([str(run_file), "--out", str(tmp_path / "new" / "figs")]) == 0
    assert list((tmp_path / "new" / "figs").glob("run_*.png"))

