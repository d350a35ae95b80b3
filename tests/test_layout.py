"""The layout promises of docs/architecture.md, checked on the source so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lmplay"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400  # STYLE.md: files under ~400 lines


def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_passes_the_size_line(path: Path) -> None:
    lines = len(_source(path).splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines: split it along a seam"


def test_only_the_distributed_package_reads_torchrun_variables() -> None:
    torchrun = re.compile(
        r"""["'](RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|TORCHELASTIC\w*)["']"""
    )
    readers = [
        _name(path)
        for path in MODULES
        if torchrun.search(_source(path)) and "train/distributed/" not in _name(path)
    ]
    assert readers == [], "rank logic belongs in lmplay/train/distributed/"


def test_the_checkpoint_table_is_built_in_one_function_and_never_patched() -> None:
    built = [_name(path) for path in MODULES if "CheckpointMap(" in _source(path)]
    assert built == ["lmplay/train/checkpoint.py", "lmplay/train/checkpoint_table.py"]
    patched = [
        _name(path) for path in MODULES if re.search(r"\.entries\[[^]]+\]\s*[.=]", _source(path))
    ]
    assert patched == []


def test_options_are_checked_in_config_only() -> None:
    """The commands parse and run; no `cli/` module raises on a flag's value itself, except for
    the environment (files, devices, the grid file) it checks before running."""
    option_checks = PACKAGE / "cli" / "option_checks.py"
    assert not option_checks.exists()
    value_check = re.compile(r"raise UsageError\(f?\"--[\w-]+ \{args\.")
    offenders = [
        _name(path) for path in (PACKAGE / "cli").glob("*.py") if value_check.search(_source(path))
    ]
    assert offenders == []
