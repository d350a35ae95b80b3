"""The grid file format: base flags, lists of values to cross, optional named runs.

A grid is a JSON object; flags are `lmp_trainer` flags without the leading dashes (`-` or `_`
both accepted), each with one value (`true` for a switch such as `no-packing`):

    {
      "name": "demo",                          # optional; default: the file name
      "out_root": "out_grid/demo",             # optional; default: out_grid/<name>
      "base": {"training-plan": "tiny", "max-steps": 40, "embed-dim": 64},
      "cross": {"exp": ["gpt2ish", "modern"], "seed": [0, 1]},
      "runs": [                                # optional named variants, each crossed too
        {"name": "short", "flags": {"context-len": 64}},
        {"name": "long", "flags": {"context-len": 256}}
      ]
    }

The cells are every run (one unnamed run when `runs` is absent) × every combination of the
`cross` lists. A cell's flags are the base flags, then the run's, then its cross values. Its name
joins the run name and `key=value` for each crossed flag (a path value by its file stem), e.g.
`short,exp=modern,seed=1`; it is also the cell's folder under the output root and its
`--run-name` (unless the flags set one). The grid sets `--out-dir` and `--device` itself, so a
grid file cannot set them nor `--model`. Relative paths in flags are read by `lmp_trainer`,
which runs in the folder `lmp_grid` was started from.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmplay.errors import UsageError
from lmplay.strict_json import loads_unique, reject_unknown

GRID_KEYS = {"name", "out_root", "base", "cross", "runs"}
RUN_KEYS = {"name", "flags"}
# Set by the queue for every cell (the folder and the device are the grid's to choose).
RESERVED_FLAGS = {"out-dir", "device", "model"}
DEFAULT_OUT_PARENT = Path("out_grid")
MAX_CELLS = 100_000  # checked before any cell is built: a typo must not exhaust the memory
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its name (also its folder) and its `lmp_trainer` flags."""

    name: str
    flags: tuple[tuple[str, str | bool], ...]

    def args(self) -> list[str]:
        """The flags as `lmp_trainer` arguments (`--name value`, a switch alone)."""
        out: list[str] = []
        for key, value in self.flags:
            if value is True:
                out.append(f"--{key}")
            elif value is not False:
                out.extend([f"--{key}", value])
        return out

    def flag(self, key: str) -> str | bool | None:
        return dict(self.flags).get(key)


@dataclass(frozen=True)
class GridSpec:
    name: str
    out_root: Path
    cells: tuple[Cell, ...]
    source: Path

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise KeyError(name)


def load_grid(path: Path, known_flags: dict[str, bool] | None = None) -> GridSpec:
    """Read and check a grid file; every problem raises `UsageError` naming the file and field.

    `known_flags` maps each `lmp_trainer` flag (without dashes) to whether it is a switch; when
    given, unknown flags and switches given a non-boolean value are refused here, before any
    cell runs.
    """
    path = Path(path)
    try:
        doc = loads_unique(path.read_bytes(), str(path))
    except OSError as e:
        raise UsageError(f"{path}: cannot read grid file ({e.strerror or e})") from e
    if not isinstance(doc, dict):
        raise UsageError(f'{path}: a grid must be a JSON object with "base" and "cross"')
    reject_unknown(doc, GRID_KEYS, str(path))
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise UsageError(f"{path}: name {name!r} must be letters, digits and _ . + = -")
    out_root = doc.get("out_root", str(DEFAULT_OUT_PARENT / name))
    if not isinstance(out_root, str) or not out_root:
        raise UsageError(f"{path}: out_root must be a folder path, got {out_root!r}")
    check = _FlagCheck(path, known_flags)
    base = check.flags(doc.get("base", {}), "base")
    cross = _cross(doc.get("cross", {}), check)
    runs = _runs(doc.get("runs"), check)
    if "cross" not in doc and "runs" not in doc:
        raise UsageError(
            f'{path}: a grid needs "cross" (lists of values to cross) or "runs" (named '
            "variants); without either it is not a grid"
        )
    count = len(runs) * math.prod(len(values) for values in cross.values())
    if count > MAX_CELLS:
        raise UsageError(
            f"{path}: the grid has {count:,} cells; at most {MAX_CELLS:,} are allowed (split it "
            "into several grids)"
        )
    cells = _cells(path, base, cross, runs)
    return GridSpec(name=name, out_root=Path(out_root), cells=tuple(cells), source=path)


class _FlagCheck:
    def __init__(self, path: Path, known: dict[str, bool] | None) -> None:
        self.path = path
        self.known = known

    def key(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw:
            raise UsageError(f"{self.path}: {where}: flag names must be strings, got {raw!r}")
        key = raw.lstrip("-").replace("_", "-")
        if key in RESERVED_FLAGS:
            raise UsageError(
                f"{self.path}: {where}: flag {raw!r} is set by lmp_grid for each cell "
                f"(reserved: {', '.join(sorted(RESERVED_FLAGS))})"
            )
        if self.known is not None and key not in self.known:
            raise UsageError(f"{self.path}: {where}: unknown lmp_trainer flag {raw!r}")
        return key

    def value(self, key: str, raw: Any, where: str) -> str | bool:
        switch = self.known is not None and self.known[key]
        if isinstance(raw, bool):
            if self.known is not None and not switch:
                raise UsageError(f"{self.path}: {where}: {key} needs a value, got {raw!r}")
            return raw
        if switch:
            raise UsageError(f"{self.path}: {where}: {key} is a switch: use true or false")
        if isinstance(raw, (str, int, float)):
            return str(raw)
        raise UsageError(
            f"{self.path}: {where}: {key} must be a string, number or boolean, got {raw!r}"
        )

    def flags(self, raw: Any, where: str) -> dict[str, str | bool]:
        if not isinstance(raw, dict):
            raise UsageError(f"{self.path}: {where} must be an object of flag: value")
        out: dict[str, str | bool] = {}
        for raw_key, raw_value in raw.items():
            key = self.key(raw_key, where)
            if key in out:
                raise UsageError(f"{self.path}: {where}: flag {key} given twice")
            out[key] = self.value(key, raw_value, f"{where}.{raw_key}")
        return out


def _cross(raw: Any, check: _FlagCheck) -> dict[str, list[str | bool]]:
    if not isinstance(raw, dict):
        raise UsageError(f'{check.path}: cross must be an object such as {{"seed": [0, 1]}}')
    cross: dict[str, list[str | bool]] = {}
    for raw_key, values in raw.items():
        key = check.key(raw_key, "cross")
        if key in cross:
            raise UsageError(f"{check.path}: cross: flag {key} given twice")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{check.path}: cross.{raw_key} must be a non-empty list of values")
        cross[key] = [check.value(key, v, f"cross.{raw_key}") for v in values]
        same = [_same_value(v) for v in values]
        if len(set(same)) != len(same):
            raise UsageError(f"{check.path}: cross.{raw_key} lists a value twice: {values}")
    return cross


def _runs(raw: Any, check: _FlagCheck) -> list[tuple[str, dict[str, str | bool]]]:
    if raw is None:
        return [("", {})]
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{check.path}: runs must be a non-empty list of {{name, flags}}")
    runs: list[tuple[str, dict[str, str | bool]]] = []
    for i, run in enumerate(raw):
        where = f"runs[{i}]"
        if not isinstance(run, dict):
            raise UsageError(f'{check.path}: {where} must be an object {{"name", "flags"}}')
        reject_unknown(run, RUN_KEYS, f"{check.path}: {where}")
        name = run.get("name")
        if not isinstance(name, str) or not _NAME_OK.match(name):
            raise UsageError(
                f"{check.path}: {where}.name {name!r} must be letters, digits and _ . + = -"
            )
        runs.append((name, check.flags(run.get("flags", {}), f"{where}.flags")))
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise UsageError(f"{check.path}: runs: names must differ, got {names}")
    return runs


def _cells(
    path: Path,
    base: dict[str, str | bool],
    cross: dict[str, list[str | bool]],
    runs: list[tuple[str, dict[str, str | bool]]],
) -> list[Cell]:
    cells: list[Cell] = []
    for run_name, run_flags in runs:
        clash = sorted(set(run_flags) & set(cross))
        if clash:
            raise UsageError(f"{path}: run {run_name!r} sets {clash[0]}, which cross also lists")
        for values in itertools.product(*cross.values()):
            crossed = dict(zip(cross, values))
            parts = [run_name] if run_name else []
            parts += [f"{key}={_short(value)}" for key, value in crossed.items()]
            name = ",".join(parts) or "run"
            flags = {**base, **run_flags, **crossed}
            flags.setdefault("run-name", name)
            cells.append(Cell(name=name, flags=tuple(flags.items())))
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"{path}: two cells would share the folder {duplicates[0]!r}")
    return cells


def _same_value(value: Any) -> Any:
    """What a crossed value means to lmp_trainer: `1` and `1.0` are one value, `"1"` too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _short(value: str | bool) -> str:
    """A cell-name part: a path by its file stem, anything else as written, folder-safe."""
    text = str(value).lower() if isinstance(value, bool) else value
    if "/" in text or text.endswith(".json"):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
