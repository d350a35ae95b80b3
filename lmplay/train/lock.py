"""One run per checkpoint: a lock file lmplay creates itself, `flock`ed for the whole run.

A second `lmp_trainer` on the same checkpoint would otherwise resume from the first one's file
and overwrite its later saves. The lock covers every file of the run, since `RunFiles` derives
them all from the checkpoint the lock is named after.

The lock file (`STEM.lmp.lock`) is only ever one lmplay made: it is created complete (written,
locked, then linked into place, so no reader sees it empty) and opened without following
symlinks. A file at that path that is not an lmplay lock, or a symlink, is refused and left as
it is. The kernel drops a `flock` when its process dies, so the lock of a killed run is taken
over, with a message, by the next run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lmplay.errors import UsageError
from lmplay.run_files import RunFiles

MARK = "lmplay lock"  # the first line of every lock file lmplay writes


@contextmanager
def run_lock(files: RunFiles | str | Path) -> Iterator[Path]:
    """Hold the lock of the run `files` names; UsageError naming the holder when another has it."""
    if not isinstance(files, RunFiles):
        files = RunFiles(Path(files))
    with hold_lock(files.lock, str(files.checkpoint), "--model/--out-dir") as path:
        yield path


@contextmanager
def hold_lock(path: Path, what: str, other: str) -> Iterator[Path]:
    """Hold the lock file `path` guarding `what`; refusals suggest a different `other` flag.

    Folders created for the lock file, and the lock file itself, are removed at exit (the file
    while still locked, so no waiting process can lock a file that is no longer the path's).
    """
    created = _make_parents(path.parent)
    try:
        fd = _acquire(path, what, other)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield path
    finally:
        if _is_ours(path, fd):
            path.unlink(missing_ok=True)
        os.close(fd)  # closing the last descriptor releases the flock
        _remove_empty(created)


def _acquire(path: Path, what: str, other: str) -> int:
    while True:
        fd = _create(path)
        if fd is not None:
            return fd
        fd = _open_existing(path, what, other)
        if fd is not None:
            return fd
        # The file went away between our create and open attempts (its holder ended): again.


def _create(path: Path) -> int | None:
    """A new lock file at `path`, locked and holding our pid; None when `path` exists."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _write_holder(fd)
        try:
            os.link(temp, path, follow_symlinks=False)  # atomic: fails when `path` exists
        except FileExistsError:
            os.close(fd)
            return None
        return fd
    except BaseException:
        _close_quietly(fd)
        raise
    finally:
        temp.unlink(missing_ok=True)


def _open_existing(path: Path, what: str, other: str) -> int | None:
    """Take over an existing lock file whose holder died; refuse one held, or not lmplay's."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symlink: lmplay's lock is a file it creates itself; remove the "
                f"link, or pass a different {other}"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _read(fd).startswith(MARK):
            raise UsageError(
                f"{path} exists and is not an lmplay lock; lmplay leaves it as it is: move it "
                f"away, or pass a different {other}"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{what} is in use by {_holder(fd)} (lock {path}); wait for it to end, or "
                f"pass a different {other}"
            ) from None
        if not _is_ours(path, fd):
            os.close(fd)  # its holder removed it between our open and our lock
            return None
        print(
            f"note: taking over the lock {path} of {_holder(fd)}, which is no longer running",
            file=sys.stderr,
        )
        _write_holder(fd)
        return fd
    except BaseException:
        _close_quietly(fd)
        raise


def _is_ours(path: Path, fd: int) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _write_holder(fd: int) -> None:
    command = shlex.join([sys.executable, *sys.argv])
    data = f"{MARK}\npid {os.getpid()}: {command}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")


def _holder(fd: int) -> str:
    text = _read(fd).removeprefix(MARK).strip()
    text = " ".join(text.split())
    return f"process {text}" if text else "another process"


def _close_quietly(fd: int) -> None:
    with suppress(OSError):
        os.close(fd)


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
