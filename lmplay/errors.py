"""Errors that end a command with a one-line message and exit code 2 (bad input, not a bug)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a flag, a plan file, a dataset, a checkpoint.

    The CLI prints `error: <message>` on one line and exits with code 2; nothing on disk is
    written. The message names the bad value and what is allowed.
    """


class CheckpointError(UsageError):
    """A checkpoint that cannot be used: truncated, corrupted, foreign, newer, other model."""


class HubUnavailableError(UsageError):
    """A hub dataset could not be reached; the message says how to point the plan at local files."""


class WriteFailed(Exception):
    """A file of a running command could not be written (disk full, folder gone, quota).

    Training stops with one `error:` line and exit code 3; the file being replaced is intact,
    because every write goes through a temp file and a rename.
    """


def one_line(error: BaseException, limit: int = 200) -> str:
    """`error`'s message on one line of at most `limit` characters, for an `error:` line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError):
        text = f"missing key {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
