"""JSON for files people write by hand (config, grid and plan files): a key given twice, or one
that means nothing there, is an error.

Python's `json` keeps the last of two equal keys without a word, so a value the user set, then
set again lower down, would silently lose; these files refuse it instead. A misspelt key would
be ignored just as silently.
"""

from __future__ import annotations

import json
from typing import Any

from lmplay.errors import UsageError


def loads_unique(text: str | bytes, where: str) -> Any:
    """`json.loads(text)`, refusing duplicate keys in any object; UsageError naming `where`."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise UsageError(f"{where}: key {key!r} is given twice; keep one")
            seen[key] = value
        return seen

    try:
        return json.loads(text, object_pairs_hook=unique)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{where}: not valid JSON: {error}") from None


def reject_unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    """A UsageError naming the first (sorted) key of `obj` not in `allowed`, and the allowed."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
