"""The grid file: cells from base × runs × crossed lists, and one-line refusals of bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmplay.cli.grid import main, trainer_flags
from lmplay.errors import UsageError
from lmplay.grid.queue import device_slots, last_error_line
from lmplay.grid.spec import load_grid


def write_grid(folder: Path, doc: object, name: str = "grid.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_cells_cross_every_list_for_every_named_run(tmp_path: Path) -> None:
    grid = write_grid(
        tmp_path,
        {
            "base": {"max_steps": 5, "no-packing": True, "lr": 0.003},
            "cross": {"exp": ["gpt2ish", "modern"], "training-plan": ["plans/a.json", "tiny"]},
            "runs": [{"name": "short", "flags": {"context-len": 64}}, {"name": "long"}],
        },
    )
    spec = load_grid(grid, trainer_flags())
    assert spec.name == "grid" and spec.out_root == Path("out_grid/grid")
    assert [c.name for c in spec.cells] == [
        "short,exp=gpt2ish,training-plan=a",
        "short,exp=gpt2ish,training-plan=tiny",
        "short,exp=modern,training-plan=a",
        "short,exp=modern,training-plan=tiny",
        "long,exp=gpt2ish,training-plan=a",
        "long,exp=gpt2ish,training-plan=tiny",
        "long,exp=modern,training-plan=a",
        "long,exp=modern,training-plan=tiny",
    ]
    assert spec.cells[2].args() == [
        "--max-steps", "5", "--no-packing", "--lr", "0.003", "--context-len", "64",
        "--exp", "modern", "--training-plan", "plans/a.json",
        "--run-name", "short,exp=modern,training-plan=a",
    ]  # fmt: skip
    assert "--context-len" not in spec.cells[4].args()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"base": {"out-dir": "x"}}, "base: flag 'out-dir' is set by lmp_grid for each cell"),
        ({"base": {"no-such-flag": 1}}, "base: unknown lmp_trainer flag 'no-such-flag'"),
        ({"base": {"no-packing": 1}}, "no-packing is a switch: use true or false"),
        ({"cross": {"seed": []}}, "cross.seed must be a non-empty list of values"),
        ({"cross": {"seed": [0, 0]}}, "cross.seed lists a value twice"),
        ({"cross": {"seed": [0]}, "runs": [{"name": "a", "flags": {"seed": 1}}]}, "which cross"),
        ({"runs": [{"name": "a"}, {"name": "a"}]}, "runs: names must differ"),
        ({"crosss": {}}, "unknown key 'crosss'"),
        ([1, 2], "a grid must be a JSON object"),
    ],
)
def test_bad_grid_is_refused_naming_the_field(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        load_grid(write_grid(tmp_path, doc), trainer_flags())


def test_cli_bad_grid_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path, {"base": {"device": "cuda"}, "out_root": str(tmp_path / "out")})
    assert main([str(grid)]) == 2
    assert main([str(tmp_path / "missing.json")]) == 2
    assert main([str(grid), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "flag 'device' is set by lmp_grid" in err[0]
    assert "missing.json: cannot read grid file" in err[1]
    assert err[2] == "error: --jobs 0 must be at least 1"
    assert not (tmp_path / "out").exists()


def test_device_slots_and_error_lines(tmp_path: Path) -> None:
    assert device_slots("cuda:0,cuda:1", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert device_slots("cpu", 3) == ["cpu", "cpu", "cpu"]
    log = tmp_path / "train.log"
    log.write_text("error: old attempt\nstep 1\rstep 2\nerror: --lr 0 bad\nTraceback\n")
    assert last_error_line(log) == "error: --lr 0 bad"
    assert last_error_line(log, offset=len("error: old attempt\n")) == "error: --lr 0 bad"
    log.write_text("Traceback (most recent call last):\nValueError: boom\n")
    assert last_error_line(log) == "ValueError: boom"


SHIPPED_GRIDS = sorted((Path(__file__).resolve().parents[2] / "grids").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED_GRIDS, ids=[p.name for p in SHIPPED_GRIDS])
def test_shipped_grids_validate_and_name_loadable_plans(path: Path) -> None:
    from lmplay.plan.registry import load_plan

    spec = load_grid(path, trainer_flags())
    assert spec.cells
    plans = {cell.flag("training-plan") for cell in spec.cells}
    assert all(load_plan(str(plan)).stages for plan in plans)


def test_grid_and_aggregation_import_neither_torch_nor_the_trainer() -> None:
    code = (
        "import sys, lmplay.cli.grid, lmplay.grid.queue, lmplay.stats.aggregate; "
        "lmplay.cli.grid.trainer_flags(); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lmplay.train')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
