"""Resume notices what changed: settings that must match, and the datasets' file contents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli.trainer import main

ARGS = ["--training-plan", "plan.json", "--out-dir", "out", *TINY_FLAGS]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    one_stage_plan(folder, documents=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["--max-steps", "1", *ARGS]) == 0
    return folder


@pytest.fixture
def trained(one_step_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a one-step run (plan, data, out/) in tmp_path; returns its checkpoint."""
    shutil.copytree(one_step_run, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "out" / "gpt2ish.lmp"


def refused(capsys: pytest.CaptureFixture, checkpoint: Path, *extra: str) -> str:
    capsys.readouterr()
    before = checkpoint.read_bytes()
    assert main(["--max-steps", "2", *ARGS, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert checkpoint.read_bytes() == before
    assert err[-1].startswith("error: ")
    return err[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "7"], "--seed 7 differs from the checkpoint out/gpt2ish.lmp (--seed 0); "),
        (["--dropout", "0.2"], "--dropout 0.2 differs from the checkpoint"),
        (["--no-packing"], "--no-packing differs from the checkpoint out/gpt2ish.lmp (no --no-p"),
    ],
)
def test_a_changed_setting_is_refused_naming_the_flag_that_accepts_it(
    trained: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    err = refused(capsys, trained, *flags)
    assert message in err
    assert f"--allow-changed {flags[0].removeprefix('--')}" in err


def test_batch_size_change_refused_then_accepted(trained: Path, capsys) -> None:
    err = refused(capsys, trained, "--batch-size", "4")
    assert "--batch-size 4 differs from the checkpoint" in err and "(--batch-size 8)" in err
    assert (
        main(["--max-steps", "2", *ARGS, "--batch-size", "4", "--allow-changed", "batch-size"]) == 0
    )
    assert "batch-size changed (--allow-changed): 8 -> 4" in capsys.readouterr().err
    # The checkpoint now holds the new value: the same command resumes without the flag.
    assert main(["--max-steps", "3", *ARGS, "--batch-size", "4"]) == 0


def test_changed_data_file_is_refused_until_allowed(trained: Path, capsys) -> None:
    corpus = trained.parent.parent / "corpus.jsonl"
    lines = corpus.read_text().splitlines(keepends=True)
    corpus.write_text("".join(reversed(lines)))  # same size, other contents
    err = refused(capsys, trained)
    assert "dataset 'corpus' changed since the checkpoint out/gpt2ish.lmp was saved" in err
    assert "(corpus.jsonl has other contents, same size)" in err
    assert "--allow-changed data" in err
    assert main(["--max-steps", "2", *ARGS, "--allow-changed", "data"]) == 0
    err = capsys.readouterr().err
    assert "dataset 'corpus' changed (--allow-changed data)" in err
    assert "stage 'main' starts over: its data changed" in err


def test_settings_that_may_change_freely(trained: Path, capsys) -> None:
    free = ["--lr", "1e-3", "--validation-interval", "64", "--mini-batch-size", "2"]
    assert main(["--max-steps", "2", *ARGS, *free]) == 0


def test_unknown_allow_changed_name(tmp_path: Path, monkeypatch, capsys) -> None:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    assert main([*ARGS, "--allow-changed", "seed,colour"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --allow-changed colour: not a setting a resume compares")
