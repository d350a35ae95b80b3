"""The commands show every warning as one plain line, without Python's file:line."""

from __future__ import annotations

import warnings

from lmplay.cli import plain_warnings


def test_a_warning_is_one_plain_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with warnings.catch_warnings():  # restores Python's own display afterwards
        warnings.simplefilter("always")
        plain_warnings.install()
        warnings.warn("stats file is missing;\n  the history starts empty", stacklevel=1)
    assert capsys.readouterr().err == "warning: stats file is missing; the history starts empty\n"
