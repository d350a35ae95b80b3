"""Bad stop-rule and sample flags end with one error line and exit 2, writing nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli.trainer import build_parser, main


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stop-at-loss", "-1"], "--stop-at-loss -1.0 must be a finite number >= 0"),
        (["--stop-loss-window", "0"], "--stop-loss-window 0 must be a positive integer"),
        (["--generate-prompts", " | "], "--generate-prompts ' | ' holds no prompt"),
        (["--early-stop-set", "nope"], "--early-stop-set nope: not a validation set"),
        (["--best-set", "nope"], "--best-set nope: not a validation set of plan 'test'"),
        (["--min-epochs", "1"], "--min-epochs 1.0 has no effect without --stop-at-loss"),
    ],
)
def test_bad_flags_are_refused(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    plan = one_stage_plan(tmp_path)
    out = tmp_path / "out"
    argv = [*TINY_FLAGS, "--training-plan", str(plan), "--out-dir", str(out), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()


def test_every_new_flag_is_on_the_command_line() -> None:
    args = build_parser().parse_args(
        shlex.split(
            "--stop-at-loss 2.5 --stop-loss-window 5 --min-steps 3 --min-epochs 0.5 --max-epochs 4 "
            "--early-stop-set a --patience 2 --keep-best --best-set a --generate-every 64 "
            "--generate-prompts x|y --generate-tokens 9 --temperature 0 --top-k 0"
        )
    )
    assert getattr(args, "stop.stop_at_loss") == 2.5 and getattr(args, "stop.patience") == 2
    assert getattr(args, "samples.generate_prompts") == "x|y"
    assert getattr(args, "samples.top_k") == 0 and getattr(args, "stop.keep_best") is True
