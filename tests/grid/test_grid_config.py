"""`lmp_grid`'s flags are GridConfig (lmplay/config): every bad value is refused when it is built,
in one line, before the grid file is read; the executors only convert the checked values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmplay.cli.flags import parse_flags
from lmplay.cli.grid import build_parser, main
from lmplay.config import DEFAULT_SLURM_TIME_MIN, EXECUTOR_GROUP, GRID_SECTIONS, GridConfig
from lmplay.errors import UsageError
from lmplay.grid.executors import slurm_options

SLURM = {"executor": "slurm"}
TIME_FORMS = "give minutes, or [DAYS-]HOURS:MINUTES[:SECONDS] (e.g. 90, 1:30:00, 2-00:00:00)"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jobs": 0}, "--jobs 0 must be at least 1"),
        ({"devices": " , "}, "--devices ' , ' names no device"),
        ({"executor": "pbs"}, "--executor 'pbs': choose one of local, submitit-local, slurm"),
        ({"slurm_partition": "gpu"}, "--slurm-partition: only for --executor slurm"),
        (
            {"executor": "submitit-local", "slurm_time": "90", "slurm_extra": ("a=b",)},
            "--slurm-time, --slurm-extra: only for --executor slurm",
        ),
        ({**SLURM, "slurm_gpus_per_task": -1}, "--slurm-gpus-per-task -1 must be at least 0"),
        ({**SLURM, "slurm_array_parallelism": 0}, "--slurm-array-parallelism 0 must be at least 1"),
        ({**SLURM, "slurm_time": "1:2:3:4"}, f"--slurm-time '1:2:3:4': {TIME_FORMS}"),
        ({**SLURM, "slurm_time": "abc"}, f"--slurm-time 'abc': {TIME_FORMS}"),
        ({**SLURM, "slurm_time": "1:-5"}, f"--slurm-time '1:-5': {TIME_FORMS}"),
        ({**SLURM, "slurm_time": "0:00"}, "--slurm-time '0:00' must be more than zero"),
        (
            {**SLURM, "slurm_extra": ("account=",)},
            "--slurm-extra 'account=': give KEY=VALUE (e.g. account=myproj) or KEY",
        ),
        ({**SLURM, "slurm_extra": ("=x",)}, "--slurm-extra '=x': give KEY=VALUE"),
    ],
)
def test_grid_config_refuses_each_bad_value(values: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        GridConfig(**values)


def test_checked_slurm_values_become_submitit_parameters() -> None:
    assert GridConfig().slurm_time_min() == DEFAULT_SLURM_TIME_MIN
    minutes = {"90": 90, "1:30:00": 90, "2-00:00:00": 2880, "1-2": 1560, "1:30": 2, "0:0:1": 1}
    for text, expected in minutes.items():
        assert GridConfig(**SLURM, slurm_time=text).slurm_time_min() == expected, text
    cfg = GridConfig(
        **SLURM, slurm_gpus_per_task=2, slurm_setup=("module load cuda",),
        slurm_extra=("account=lab", "--exclusive"),
    )  # fmt: skip
    params = slurm_options(cfg).parameters()
    assert params["gpus_per_task"] == 2 and params["setup"] == ["module load cuda"]
    assert params["additional_parameters"] == {"account": "lab", "exclusive": True}


def test_cli_refuses_a_bad_flag_value_before_reading_the_grid(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing.json")
    assert main([missing, "--executor", "slurm", "--slurm-time", "0"]) == 2
    assert main([missing, "--slurm-setup", "x", "--slurm-setup", "y"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: --slurm-time '0' must be more than zero",
        "error: --slurm-setup: only for --executor slurm",
    ]


def test_grid_config_file_and_repeated_flags(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text('executor = "slurm"\nslurm-setup = ["a"]\njobs = 2\n')
    argv = ["g.json", "--config", str(config), "--slurm-setup", "b", "--slurm_extra", "k=v"]
    args, values = parse_flags(build_parser(), GRID_SECTIONS, argv)
    cfg = GridConfig(**values["grid"])
    assert (args.grid, cfg.jobs, cfg.executor) == (Path("g.json"), 2, "slurm")
    assert (cfg.slurm_setup, cfg.slurm_extra) == (("a", "b"), ("k=v",))
    config.write_text('slurm-extra = "account=lab"\n')
    with pytest.raises(UsageError, match="'slurm-extra' must be a list of values"):
        parse_flags(build_parser(), GRID_SECTIONS, ["g.json", "--config", str(config)])


def test_grid_help_lists_the_executor_flags_in_their_group() -> None:
    text = build_parser().format_help()
    group = text[text.index(EXECUTOR_GROUP) :]
    assert "--executor {local,submitit-local,slurm}" in group and "--slurm-extra KEY=VALUE" in group
    assert "--jobs" not in group and "(default: [])" not in text and "(default: ())" not in text
