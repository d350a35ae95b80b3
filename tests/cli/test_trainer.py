"""lmp_trainer end to end: bad input, a real run, resume, bit-exact interrupt and rerun."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from lmp_testing import (
    TINY_FLAGS,
    TrainerProcess,
    assert_bitwise_equal,
    load_components,
    one_stage_plan,
    records_without_timing,
    train_in_process,
)

from lmplay.cli.trainer import main
from lmplay.stats.runs import load_stats


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    one_stage_plan(tmp_path, documents=40)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exp", "nonesuch"], "unknown --exp 'nonesuch' (a registered name, or hf:PATH"),
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


# Saves every step (8 samples a step), validates every third: 8 steps cross every kind of point.
COMMON = ["--save-interval", "8", "--validation-interval", "24"]
STEPS = "8"


def train(plan_dir: Path, out: str, *extra: str) -> tuple[int, str]:
    """The run in this process: the same `main` as the console script, minus the interpreter
    start; only the Ctrl+C test below needs a process of its own to signal."""
    args = ["--training-plan", "plan.json", "--out-dir", out, *TINY_FLAGS, *COMMON, *extra]
    return train_in_process(plan_dir, args)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan folder with an uninterrupted run of STEPS steps in `straight/`."""
    folder = tmp_path_factory.mktemp("trainer")
    one_stage_plan(folder, documents=40)
    code, err = train(folder, "straight", "--max-steps", STEPS)
    assert code == 0, err
    return folder


@pytest.mark.slow
def test_run_writes_checkpoint_and_stats_and_resumes_bit_identical(straight: Path) -> None:
    code, err = train(straight, "split", "--max-steps", "3")
    assert code == 0, err
    split = straight / "split"
    components = load_components(split / "gpt2ish.lmp")
    assert components["runner"]["state"]["step"] == 3
    assert components["model"]["state_args"]["exp"] == "gpt2ish"
    stats = load_stats(split / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == [1, 2, 3]
    assert stats.validation["corpus"][0]["samples"] == 0
    code, err = train(straight, "split", "--max-steps", "5")  # steps of the whole run
    assert code == 0 and "resumed from split/gpt2ish.lmp at step 3" in err, err
    assert [r["steps"] for r in load_stats(split / "gpt2ish.stats.jsonl").train] == [1, 2, 3, 4, 5]
    code, err = train(straight, "split", "--max-steps", STEPS)
    assert code == 0, err
    reference = straight / "straight"
    assert_bitwise_equal(
        load_components(reference / "gpt2ish.lmp"), load_components(split / "gpt2ish.lmp")
    )
    assert records_without_timing(reference / "gpt2ish.stats.jsonl") == records_without_timing(
        split / "gpt2ish.stats.jsonl"
    )


@pytest.mark.slow
def test_sigint_saves_and_rerun_finishes_bit_identical(straight: Path) -> None:
    args = ["--training-plan", "plan.json", "--out-dir", "interrupted", *TINY_FLAGS, *COMMON,
            "--max-steps", STEPS]  # fmt: skip
    run = TrainerProcess(straight, args)
    checkpoint = straight / "interrupted" / "gpt2ish.lmp"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and run.process.poll() is None:
        time.sleep(0.05)
    run.signal(signal.SIGINT)
    code, err = run.finish(timeout=120), run.output
    assert code == 130, err
    assert "resume with: lmp_trainer --training-plan plan.json" in err
    assert load_components(checkpoint)["runner"]["state"]["step"] >= 1
    code, err = train(straight, "interrupted", "--max-steps", STEPS)
    assert code == 0, err
    reference = straight / "straight"
    assert_bitwise_equal(load_components(reference / "gpt2ish.lmp"), load_components(checkpoint))
    assert records_without_timing(reference / "gpt2ish.stats.jsonl") == (
        records_without_timing(straight / "interrupted" / "gpt2ish.stats.jsonl")
    )


def test_other_architecture_or_corrupt_checkpoint_is_refused_and_left_alone(plan_dir) -> None:
    assert train(plan_dir, "out", "--max-steps", "1")[0] == 0
    code, err = train(plan_dir, "out", "--max-steps", "2", "--exp", "modern",
                      "--model", "out/gpt2ish.lmp")  # fmt: skip
    assert code == 2
    assert "holds a 'gpt2ish' model but --exp is 'modern'" in err
    checkpoint = plan_dir / "out" / "gpt2ish.lmp"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    damaged = checkpoint.read_bytes()
    code, err = train(plan_dir, "out", "--max-steps", "2")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: checkpoint out/gpt2ish.lmp")
    assert checkpoint.read_bytes() == damaged


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
