"""Runs of different plans live in different folders; an old-layout checkpoint is not lost."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, write_corpus

from lmplay.cli.trainer import main
from lmplay.config import DataConfig, RunConfig, RunIOConfig, plan_label

FLAGS = [*TINY_FLAGS, "--validation-interval", "1000", "--save-interval", "1000"]


@pytest.mark.parametrize(
    ("training_plan", "label"),
    [("tiny", "tiny"), ("plans/wiki.json", "wiki"), ("wiki.json", "wiki"), ("a/b/my.plan", "my")],
)
def test_a_plan_is_named_by_its_built_in_name_or_file_stem(training_plan: str, label: str) -> None:
    assert plan_label(training_plan) == label


def test_default_paths_include_the_plan_and_an_explicit_out_dir_does_not() -> None:
    default = RunConfig(data=DataConfig(training_plan="plans/wiki.json"))
    assert default.model_path() == Path("out_gpt/wiki/gpt2ish.lmp")
    assert default.stats_path() == Path("out_gpt/wiki/gpt2ish.stats.jsonl")
    explicit = RunConfig(io=RunIOConfig(out_dir="runs"))
    assert explicit.model_path() == Path("runs/gpt2ish.lmp")


def _plan(folder: Path, name: str) -> str:
    write_corpus(folder / f"{name}.jsonl", 12, seed=len(name))
    plan = {
        "name": name,
        "datasets": {name: {"files": [f"{name}.jsonl"], "validation_fraction": 0.1}},
        "stages": [{"name": "main", "datasets": [name], "epochs": 1}],
    }
    (folder / f"{name}.json").write_text(json.dumps(plan), encoding="utf-8")
    return f"{name}.json"


def test_two_plans_are_two_runs_each_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = _plan(tmp_path, "first"), _plan(tmp_path, "second")
    assert main(["--training-plan", first, *FLAGS, "--max-steps", "1"]) == 0
    assert main(["--training-plan", second, *FLAGS, "--max-steps", "1"]) == 0
    assert (tmp_path / "out_gpt/first/gpt2ish.lmp").is_file()
    assert (tmp_path / "out_gpt/first/gpt2ish.stats.jsonl").is_file()
    assert (tmp_path / "out_gpt/second/gpt2ish.lmp").is_file()
    capsys.readouterr()
    assert main(["--training-plan", first, *FLAGS, "--max-steps", "2"]) == 0
    assert "resumed from out_gpt/first/gpt2ish.lmp at step 1" in capsys.readouterr().err


def test_an_old_layout_checkpoint_is_refused_with_the_command_that_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    plan, other = _plan(tmp_path, "first"), _plan(tmp_path, "other")
    assert main(["--training-plan", plan, *FLAGS, "--max-steps", "1"]) == 0
    out = tmp_path / "out_gpt"
    for name in ("gpt2ish.lmp", "gpt2ish.stats.jsonl"):
        (out / "first" / name).rename(out / name)  # where lmplay 0.1 wrote them
    (out / "first").rmdir()
    before = (out / "gpt2ish.lmp").read_bytes()
    capsys.readouterr()

    assert main(["--training-plan", plan, *FLAGS, "--max-steps", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: out_gpt/gpt2ish.lmp is a run of plan 'first'")
    assert (out / "gpt2ish.lmp").read_bytes() == before and not (out / "first").exists()

    # A run of another plan is another run: it starts in its own folder, the old file stays.
    assert main(["--training-plan", other, *FLAGS, "--max-steps", "1"]) == 0
    assert (out / "other" / "gpt2ish.lmp").is_file()
    assert (out / "gpt2ish.lmp").read_bytes() == before

    move = error.split("move it first: ", 1)[1].split(" (or pass", 1)[0]
    subprocess.run(["bash", "-c", move], check=True, cwd=tmp_path)
    assert sorted(p.name for p in (out / "first").iterdir()) == [
        "gpt2ish.lmp",
        "gpt2ish.stats.jsonl",
    ]
    capsys.readouterr()
    assert main(["--training-plan", plan, *FLAGS, "--max-steps", "2"]) == 0
    assert "resumed from out_gpt/first/gpt2ish.lmp at step 1" in capsys.readouterr().err
    assert shlex.split(move)[0] == "mkdir"
