"""Where a run's file goes and how it is written without losing anything (README "Output files").

- :func:`target`: ``out=`` as a path: ``~`` expanded, relative to the launch folder; a trailing ``/`` or
  an existing folder means "in this folder", the file then taking its default name.
- :func:`claim`: the one writer of a target. Before any work, the target's folder is created and a lock
  file ``.<name>.lock`` beside the target is created and locked (``flock``), which proves in seconds that
  the path can be written; a second run aiming at the same file fails at once, naming the first (pid,
  host, start time). The kernel drops the lock of a killed process, so a partial file found under a free
  lock is a killed run's leftover: it is removed, with a log line (so is its scratch file, :func:`scratch`).
- :func:`atomic`: the file is written to ``.<name>.partial`` and renamed onto the target only once complete
  and synced. SIGINT (Ctrl-C) during the write takes effect at the next :func:`checkpoint` (between
  datasets; HDF5's C code must not be interrupted, h5py would swallow the KeyboardInterrupt), and any
  failure removes the partial file. An OSError (disk full, permissions) becomes one :class:`OutputError`
  line naming the path; a file already at the target stays as it was.
- :func:`folder`: a folder for other outputs (figures), created and checked writable.
- :func:`job_folder`: a sweep job's folder name from its overrides, safe and unique (``hydra.sweep.subdir``).

Which existing files may be replaced is the run file's business: ``driftsim.io.store.check_replaceable``.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

__all__ = ["OutputError", "Interrupted", "target", "claim", "scratch", "atomic", "checkpoint", "folder",
           "os_errors", "job_folder", "sibling"]

log = logging.getLogger(__name__)

SCRATCH = "records"  # the kind of a run's scratch file, .<name>.records


class OutputError(ValueError):
    """An output path that cannot be written, is taken by another writer, or holds a file that must not be
    replaced; the message is one line naming the path and why."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a claimed write; the message says what happened to the target."""


def sibling(final: Path, kind: str) -> Path:
    """The hidden companion ``.<name>.<kind>`` of ``final`` in its folder (``partial``, ``lock``, ``records``)."""
    return final.with_name(f".{final.name}.{kind}")


def _why(e: Exception) -> str:
    """An OSError's reason in words: the errno text, or h5py's message (which carries the errno's text of a
    failed write inside, e.g. "error message = 'No space left on device'")."""
    if getattr(e, "strerror", None):
        return e.strerror
    found = re.search(r"error message = '([^']*)'", str(e))
    return found.group(1) if found else str(e)


@contextmanager
def os_errors(path: Path, after: str = "") -> Iterator[None]:
    """Turn an OSError inside the block (and h5py's RuntimeError for a failed write) into one OutputError line
    ``"<path> cannot be written: <reason><after>"``."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{path} cannot be written: {_why(e)}{after}") from e
    except RuntimeError as e:
        if "errno =" not in str(e):  # not an I/O failure reported by HDF5
            raise
        raise OutputError(f"{path} cannot be written: {_why(e)}{after}") from e


def target(text: str, base: Path, name: str) -> Path:
    """The file that ``out=text`` names: ``~`` expanded, relative to ``base``; with a trailing ``/`` or when
    it is an existing folder, ``name`` inside it. Raises OutputError when that is a folder too."""
    path = base / os.path.expanduser(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        path = path / name
    if path.is_dir():
        raise OutputError(f"{path} is a folder; a run is written to a file: choose another out")
    return path


def _make_folder(path: Path, named: Path) -> None:
    """Create ``path`` and its parents for writing ``named``, or say which part is in the way."""
    blocking = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocking == named and not blocking.is_dir():
        raise OutputError(f"{named} is a file, not a folder")
    if blocking is not None and not blocking.is_dir():
        raise OutputError(f"{named} cannot be written: {blocking} is a file, not a folder")
    with os_errors(named):
        path.mkdir(parents=True, exist_ok=True)


def folder(path: Path) -> Path:
    """A folder for output files: created (with its parents) and checked writable; returns it."""
    path = Path(os.path.expanduser(path))
    _make_folder(path, path)
    with os_errors(path):
        tempfile.TemporaryFile(dir=path).close()
    return path


# --------------------------------------------------------------------------------------------- one writer

class _Claims(threading.local):
    """The targets this thread holds: a nested claim (write_run inside run_config) is free."""

    def __init__(self):
        self.paths: set[Path] = set()


_claims = _Claims()


def _holder() -> str:
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}"


def _lock(final: Path) -> tuple[int, str]:
    """Create and lock ``final``'s lock file; returns its descriptor and what the previous holder wrote in it
    (empty for a new lock file)."""
    lock = sibling(final, "lock")
    while True:
        with os_errors(final):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise OutputError(f"{final} is being written by another driftsim run ({holder}; lock file {lock}): "
                              "wait for it to finish or choose another out") from None
        try:  # the lock file we locked is still the one at that path (a finishing writer unlinks it)
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            previous = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder().encode(), 0)
            return fd, previous
        os.close(fd)


@contextmanager
def claim(final: Path) -> Iterator[Path]:
    """Be the only writer of ``final`` for the block (see the module docstring); fails at once, before any
    work, with an OutputError when the path cannot be written or another run holds it. Ctrl-C inside the
    block leaves as :class:`Interrupted`, "interrupted; nothing written to <final>"."""
    final = Path(final)
    held = _claims.paths
    if final in held:
        yield final
        return
    _make_folder(final.parent, final)
    fd, previous = _lock(final)
    held.add(final)
    try:
        for kind in ("partial", SCRATCH):
            left = sibling(final, kind)
            if left.exists():  # its writer no longer holds the lock: it was killed
                log.warning("removing %s, left by a run that was stopped before it finished (%s)", left,
                            previous or "no lock")
                left.unlink()
        yield final
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; nothing written to {final}") from None
    finally:
        held.discard(final)
        lock = sibling(final, "lock")
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                lock.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def scratch(final: Path) -> Iterator[Path]:
    """A claimed writer's scratch file ``.<name>.records`` beside ``final`` (a simulation's records streamed
    there while the run goes on), removed when the block ends, however it ends; a killed run's is removed by
    the next :func:`claim`. OSErrors become an OutputError naming ``final``."""
    final = Path(final)
    path = sibling(final, SCRATCH)
    with claim(final):
        try:
            with os_errors(final, after="; nothing written (a file already there is kept)"):
                yield path
        finally:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- atomic write

_interrupted = threading.Event()  # SIGINT arrived while a write deferred it


def checkpoint() -> None:
    """Where a deferred Ctrl-C takes effect: raises KeyboardInterrupt if one arrived during the write."""
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


@contextmanager
def _deferred_sigint() -> Iterator[None]:
    """SIGINT only sets a flag for :func:`checkpoint` (main thread only: others cannot take signals; an
    ignored SIGINT, as in a background job, stays ignored)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: _interrupted.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def atomic(final: Path, before_replace: Optional[Callable[[Path], None]] = None) -> Iterator[Path]:
    """Write ``final`` through its partial file: the block writes the path it is given (calling
    :func:`checkpoint` between steps); once it ends, the file is synced and renamed onto ``final``
    (``before_replace(final)`` first: the last check of what is there). On any failure the partial file
    is removed and ``final`` is untouched; OSErrors become an OutputError naming ``final``."""
    final = Path(final)
    partial = sibling(final, "partial")
    with claim(final), _deferred_sigint():
        try:
            with os_errors(final, after="; nothing written (a file already there is kept)"):
                yield partial
                checkpoint()
                with open(partial, "rb+") as fh:  # on disk before the rename makes it visible
                    os.fsync(fh.fileno())
                if before_replace is not None:
                    before_replace(final)
                os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    if _interrupted.is_set():  # Ctrl-C between the last checkpoint and the rename: the file is whole
        _interrupted.clear()
        raise Interrupted(f"interrupted; {final} had been written completely and is kept")


# --------------------------------------------------------------------------------------------- sweep jobs

_SAFE = re.compile(r"[^A-Za-z0-9._=,+\-\[\]]")
_MAX_NAME = 96  # well under the 255 bytes of a file name, with room for the hash


def job_folder(overrides: str) -> str:
    """A sweep job's folder name from its overrides (``hydra.job.override_dirname``, "k=v,k2=v2"): the string
    itself when it is short and holds only letters, digits and ``._=,+-[]``; otherwise those characters kept,
    others replaced by ``_``, cut to a length limit and followed by a hash of the whole string, so that no
    value escapes the sweep folder (``..``, ``/``), two jobs never share a folder, and no name is too long."""
    safe = _SAFE.sub("_", overrides)
    if safe == overrides and 0 < len(overrides) <= _MAX_NAME and overrides not in (".", ".."):
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    return f"{safe[:_MAX_NAME].strip('.') or 'job'}-{digest}"

