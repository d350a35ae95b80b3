"""Whether a process still runs, for files that name the process that writes them.

A temp file of an atomic write ends in its writer's pid, and a grid cell's record holds the pid
of its run: a file whose process has ended is left over, one of a live process is not.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: object) -> bool:
    """Whether process `pid` runs on this machine; a zombie (ended, not yet reaped) does not.

    Without a cheap check (not POSIX) every positive pid counts as running, so nothing that a
    live process may still use is touched.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc here (macOS)
        return False
    return stat.rpartition(") ")[2][:1] == "Z"  # the state follows the command name "(...) "
