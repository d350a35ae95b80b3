"""Warnings as one plain line: `warning: MESSAGE`, without Python's file:line and source line.

The commands install this at start; a library user keeps Python's own warning format.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, TextIO


def show_plainly(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    with contextlib.suppress(OSError):  # a closed stderr must not turn a warning into a crash
        (file or sys.stderr).write(format_plainly(message, category, filename, lineno))


def format_plainly(
    message: Warning | str, category: Any, filename: Any, lineno: Any, line: Any = None
) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


def install() -> None:
    warnings.showwarning = show_plainly
    warnings.formatwarning = format_plainly  # what logging.captureWarnings writes
