"""Crash-safe file replacement: temp file beside the target, fsync, rename, fsync the folder.

A reader, or a process restarted after a crash or SIGKILL at any moment, sees either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lmplay.processes import process_alive


def temp_path(path: Path) -> Path:
    """The temp file a writer in this process uses for `path` (hidden, same folder)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` with what `write(file)` writes; the old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        with open(temp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete temp files left by killed writers of `path` and its siblings.

    Siblings are the files of the same run named `STEM.*` (stage, step and stats files): a step
    checkpoint is not written twice, so its temp file would otherwise stay forever. Temp files
    of a live process are kept.
    """
    path = Path(path)
    for temp in path.parent.glob(f".{glob.escape(path.stem)}.*.tmp-*"):
        pid = temp.name.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            temp.unlink(missing_ok=True)
