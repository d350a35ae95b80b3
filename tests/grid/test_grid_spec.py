"""The grid file: cells from base × runs × crossed lists, and one-line refusals of bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmplay.cli.grid import main, trainer_flags
from lmplay.errors import UsageError
from lmplay.grid.queue import device_slots
from lmplay.grid.spec import load_grid
from lmplay.grid.status import last_error_line


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


TEN_FLAGS = [
    "seed", "max-steps", "batch-size", "mini-batch-size", "num-blocks", "embed-dim",
    "num-heads", "context-len", "save-interval", "validation-interval",
]  # fmt: skip


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
        ({"base": {"seed": 1}}, 'a grid needs "cross"'),
        ({}, 'a grid needs "cross"'),
        ({"cross": {"lr": [1, 1.0]}}, "cross.lr lists a value twice"),
        ({"cross": {"lr": ["0.001", 1e-3]}}, "cross.lr lists a value twice"),
        ({"cross": {flag: list(range(1, 11)) for flag in TEN_FLAGS}}, "10,000,000,000 cells"),
        ([1, 2], "a grid must be a JSON object"),
    ],
)
def test_bad_grid_is_refused_naming_the_field(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        load_grid(write_grid(tmp_path, doc), trainer_flags())


def test_cli_bad_grid_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    doc = {"base": {"device": "cuda"}, "cross": {"seed": [0]}, "out_root": str(tmp_path / "out")}
    grid = write_grid(tmp_path, doc)
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
        "import sys, lmplay.cli.grid, lmplay.grid.queue, lmplay.stats.aggregate, "
        "lmplay.stats.compare, lmplay.stats.summary; "
        "lmplay.cli.grid.trainer_flags(); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lmplay.train')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_duplicate_keys_in_a_grid_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text('{"cross": {"seed": [0, 1]}, "base": {"lr": 1e-3, "lr": 2e-3}}')
    with pytest.raises(UsageError, match="key 'lr' is given twice"):
        load_grid(path, trainer_flags())


def _cli(tmp_path: Path, doc: dict, *args: str) -> tuple[int, str]:
    grid = write_grid(tmp_path, {"out_root": str(tmp_path / "out"), **doc})
    code = main([str(grid), *args])
    return code, grid


@pytest.mark.parametrize("key", ["model", "out_dir", "out-dir"])
def test_a_cell_whose_config_file_names_a_checkpoint_is_refused_before_any_cell_runs(
    tmp_path: Path, capsys, key: str
) -> None:
    config = tmp_path / "cell.json"
    config.write_text(json.dumps({key: str(tmp_path / "other" / "x.lmp")}))
    code, _ = _cli(tmp_path, {"cross": {"seed": [0, 1]}, "base": {"config": str(config)}})
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"its --config {config} sets" in err and "which lmp_grid sets for each cell" in err
    assert not (tmp_path / "out").exists()


def test_bad_devices_and_out_roots_are_exit_2_before_any_cell_runs(tmp_path: Path, capsys) -> None:
    grid = {"cross": {"seed": [0, 1]}}
    assert _cli(tmp_path, grid, "--devices", "cuda:7")[0] == 2
    assert _cli(tmp_path, grid, "--devices", "gpu0")[0] == 2
    (tmp_path / "a_file").write_text("")
    assert _cli(tmp_path, grid, "--out-root", str(tmp_path / "a_file"))[0] == 2
    assert _cli(tmp_path, grid, "--out-root", str(tmp_path / "a_file" / "sub"))[0] == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error: --") for line in err), err
    assert "--devices 'gpu0' is not a torch device" in err[1]
    assert not (tmp_path / "out").exists()


def test_a_second_lmp_grid_on_one_grid_is_refused_naming_the_first(tmp_path: Path, capsys) -> None:
    from lmplay.cli.grid import GRID_LOCK_NAME
    from lmplay.train.lock import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    with hold_lock(out / GRID_LOCK_NAME, f"grid {out}", "--out-root"):
        code, _ = _cli(tmp_path, {"cross": {"seed": [0, 1]}})
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"grid {out} is in use by process pid {os.getpid()}" in err
    assert [p.name for p in out.iterdir()] == []  # no cell was started or marked
