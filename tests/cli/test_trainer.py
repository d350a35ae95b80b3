"""lmp_trainer end to end: bad input, a real run, resume, bit-exact interrupt and rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, one_stage_plan, run_cli

from lmplay.cli.trainer import main
from lmplay.stats.runs import load_stats

TIMING_FIELDS = {"tokens_per_s", "time"}


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    one_stage_plan(tmp_path, documents=40)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exp", "nonesuch"], "unknown --exp 'nonesuch'; choose one of: gpt2ish"),
        (["--training-plan", "missing.json"], "--training-plan missing.json: no such file"),
        (["--training-plan", "broken.json"], "malformed JSON at line 1"),
        (["--batch-size", "4", "--mini-batch-size", "8"], "--mini-batch-size 8 is larger than"),
        (["--batch-size", "0"], "--batch-size 0 must be a positive integer"),
        (["--num-heads", "-2"], "--num-heads -2 must be a positive integer"),
        (["--embed-dim", "30", "--num-heads", "4"], "--embed-dim 30 is not divisible"),
        (["--lr", "-1"], "--lr -1.0 must be a finite number >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    args: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.json").write_text('{"stages": [')
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*args, "--out-dir", "out"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_argparse_errors_also_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--batch-size", "many"])
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_exp_list_prints_every_architecture(capsys: pytest.CaptureFixture) -> None:
    assert main(["--exp", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("gpt2ish", "gpt2ish_124m", "modern", "resscale"):
        assert name in out


def test_describe_prints_groups_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--describe", "--out-dir", "out", *TINY_FLAGS]) == 0
    err = capsys.readouterr().err
    assert "weight-decay groups" in err and "no_decay" in err and "FLOPs per token" in err
    assert not (tmp_path / "out").exists()


def train(plan_dir: Path, out: str, *extra: str, timeout: float = 240):
    args = ["--training-plan", "plan.json", "--out-dir", out, *TINY_FLAGS, *extra]
    return run_cli("trainer", args, cwd=plan_dir, timeout=timeout)


def load_final(path: Path) -> dict:
    return torch.load(path, weights_only=True)["components"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    for key in a["model"]["state"]:
        assert torch.equal(a["model"]["state"][key], b["model"]["state"][key]), key
    opt_a, opt_b = a["optimizer"]["state"]["state"], b["optimizer"]["state"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for index in opt_a:
        for name, value in opt_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[index][name]))


def records_without_timing(path: Path) -> tuple[list, dict]:
    stats = load_stats(path)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rs]  # noqa: E731
    return strip(stats.train), {name: strip(rs) for name, rs in stats.validation.items()}


@pytest.mark.slow
def test_run_writes_checkpoint_stats_and_resumes(plan_dir: Path) -> None:
    first = train(plan_dir, "out", "--max-steps", "3")
    assert first.returncode == 0, first.stderr
    checkpoint = plan_dir / "out" / "gpt2ish.lmp"
    components = load_final(checkpoint)
    assert components["runner"]["state"]["step"] == 3
    assert components["model"]["state_args"]["exp"] == "gpt2ish"
    stats = load_stats(plan_dir / "out" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == [1, 2, 3]
    assert stats.validation["corpus"][0]["samples"] == 0
    second = train(plan_dir, "out", "--max-steps", "5")
    assert second.returncode == 0, second.stderr
    assert "resumed from out/gpt2ish.lmp at step 3" in second.stderr
    stats = load_stats(plan_dir / "out" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_eight_steps_equal_four_plus_resume_plus_four(plan_dir: Path) -> None:
    assert train(plan_dir, "straight", "--max-steps", "8").returncode == 0
    assert train(plan_dir, "split", "--max-steps", "4").returncode == 0
    resumed = train(plan_dir, "split", "--max-steps", "8")
    assert resumed.returncode == 0, resumed.stderr
    straight, split = plan_dir / "straight", plan_dir / "split"
    assert_bitwise_equal(load_final(straight / "gpt2ish.lmp"), load_final(split / "gpt2ish.lmp"))
    assert records_without_timing(straight / "gpt2ish.stats.jsonl") == records_without_timing(
        split / "gpt2ish.stats.jsonl"
    )


@pytest.mark.slow
def test_sigint_saves_and_rerun_finishes_bit_identical(plan_dir: Path) -> None:
    common = ["--save-interval", "8", "--validation-interval", "24"]
    assert train(plan_dir, "straight", *common).returncode == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "lmplay.cli.trainer", "--training-plan", "plan.json",
               "--out-dir", "interrupted", *TINY_FLAGS, *common]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=plan_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoint = plan_dir / "interrupted" / "gpt2ish.lmp"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "resume with: lmp_trainer --training-plan plan.json" in err
    assert load_final(checkpoint)["runner"]["state"]["step"] >= 1
    rerun = train(plan_dir, "interrupted", *common)
    assert rerun.returncode == 0, rerun.stderr
    assert_bitwise_equal(load_final(plan_dir / "straight" / "gpt2ish.lmp"), load_final(checkpoint))
    assert records_without_timing(plan_dir / "straight" / "gpt2ish.stats.jsonl") == (
        records_without_timing(plan_dir / "interrupted" / "gpt2ish.stats.jsonl")
    )


@pytest.mark.slow
def test_corrupt_checkpoint_is_refused_and_left_alone(plan_dir: Path) -> None:
    assert train(plan_dir, "out", "--max-steps", "1").returncode == 0
    checkpoint = plan_dir / "out" / "gpt2ish.lmp"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    damaged = checkpoint.read_bytes()
    result = train(plan_dir, "out", "--max-steps", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: checkpoint out/gpt2ish.lmp")
    assert checkpoint.read_bytes() == damaged


@pytest.mark.slow
def test_other_architecture_checkpoint_is_refused(plan_dir: Path) -> None:
    assert train(plan_dir, "out", "--max-steps", "1").returncode == 0
    result = train(plan_dir, "out", "--max-steps", "2", "--exp", "modern",
                   "--model", "out/gpt2ish.lmp")  # fmt: skip
    assert result.returncode == 2
    assert "holds a 'gpt2ish' model but --exp is 'modern'" in result.stderr


def test_ctrl_c_while_starting_exits_130_and_writes_nothing(plan_dir, monkeypatch, capsys) -> None:
    import lmplay.plan.registry

    def interrupted_load(name: str) -> None:
        raise KeyboardInterrupt  # as Ctrl+C lands while a large dataset is being read

    monkeypatch.setattr(lmplay.plan.registry, "load_plan", interrupted_load)
    out = plan_dir / "out"
    code = main(["--training-plan", str(plan_dir / "plan.json"), "--out-dir", str(out)])
    assert code == 130
    assert "interrupted before training started" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
