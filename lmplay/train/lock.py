"""One run per checkpoint: an exclusive `flock` on `<model>.lock`, held for the whole run.

A second `lmp_trainer` on the same checkpoint would otherwise resume from the first one's file
and overwrite its later saves. The lock file holds the holder's pid and command so the refusal
can name it. The kernel drops a `flock` when its process dies, so a lock left by a killed run
never blocks the next one; the stale file is simply locked again.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmplay.errors import UsageError


def lock_path(model_path: Path) -> Path:
    """`out/gpt2ish.lmp` -> `out/gpt2ish.lock`."""
    return model_path.with_suffix(".lock")


@contextmanager
def run_lock(model_path: Path) -> Iterator[Path]:
    """Hold the run lock of `model_path`; UsageError naming the holder when another has it.

    Folders created for the lock file, and the lock file itself, are removed at exit (the file
    while still locked, so no waiting process can lock a file that is no longer the path's).
    """
    path = lock_path(Path(model_path))
    created = _make_parents(path.parent)
    try:
        fd = _acquire(path, Path(model_path))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # closing the last descriptor releases the flock
        _remove_empty(created)


def _acquire(path: Path, model_path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UsageError(
                f"{model_path} is in use by {holder} (lock {path}); wait for it to end, or "
                "pass a different --model/--out-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder we waited on may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else sees, and must lock the path's file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _write_holder(fd)
            return fd
        os.close(fd)


def _holder_text() -> str:
    return f"pid {os.getpid()}: {shlex.join([sys.executable, *sys.argv])}"


def _write_holder(fd: int) -> None:
    data = (_holder_text() + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    text = " ".join(text.split())
    return f"process {text}" if text else "another process"


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and missing parents; the ones created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # the run wrote something there (or someone else did): keep it
