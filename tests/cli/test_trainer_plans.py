"""lmp_trainer through whole plans: three stages, a changed plan, saved datasets, offline hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, cli_in_process, one_stage_plan, three_stage_plan

from lmplay.plan.registry import load_plan
from lmplay.stats.runs import load_stats

REPO = Path(__file__).resolve().parents[2]


def train(folder: Path, *extra: str, plan: str = "plan.json"):
    args = ["--training-plan", plan, "--out-dir", "out", *TINY_FLAGS, *extra]
    return cli_in_process("trainer", args, folder)


def stages_in_order(records: list[dict]) -> list[str]:
    names: list[str] = []
    for record in records:
        if not names or names[-1] != record["stage"]:
            names.append(record["stage"])
    return names


def progress_of(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)["components"]["plan"]["state"]


@pytest.mark.slow
def test_three_stage_plan_runs_to_the_end(tmp_path: Path) -> None:
    plan = load_plan(str(three_stage_plan(tmp_path)))
    result = train(tmp_path, "--validation-interval", "64")
    assert result.returncode == 0, result.stderr
    assert "plan 'test' done" in result.stderr
    out = tmp_path / "out"
    for stage in ("simple", "mixed", "qa"):
        assert (out / f"gpt2ish.stage-{stage}.lmp").is_file(), stage
    progress = progress_of(out / "gpt2ish.lmp")
    assert progress["stage_index"] == 3 and len(progress["completed"]) == 3
    stats = load_stats(out / "gpt2ish.stats.jsonl")
    assert stages_in_order(stats.train) == ["simple", "mixed", "qa"]
    assert [r["steps"] for r in stats.train] == list(range(1, len(stats.train) + 1))
    # Every dataset that holds rows out is validated; 'qa' holds out the plan's default 2 %.
    assert list(stats.validation) == [d.name for d in plan.validation_sets()]
    assert {"simple", "harder"} <= set(stats.validation)
    for name in stats.validation:
        assert stats.validation[name][0]["samples"] == 0
        assert len(stats.validation[name]) >= 3
        assert stats.validation[name][-1]["loss"] < stats.validation[name][0]["loss"]


@pytest.mark.slow
def test_changed_plan_is_refused_then_adopted_with_override_plan(tmp_path: Path) -> None:
    plan_path = three_stage_plan(tmp_path)
    # Stage 'simple' takes 5 steps of 8 samples, so step 8 is inside stage 'mixed'.
    first = train(tmp_path, "--max-steps", "8")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    simple_checkpoint = (out / "gpt2ish.stage-simple.lmp").read_bytes()
    assert progress_of(out / "gpt2ish.lmp")["stage_index"] == 1

    plan = json.loads(plan_path.read_text())
    plan["stages"][1]["epochs"] = 0.5
    plan_path.write_text(json.dumps(plan))
    refused = train(tmp_path)
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: --training-plan plan.json differs (from stage 2 on)")
    assert "--override-plan" in error

    adopted = train(tmp_path, "--override-plan", "--max-steps", "10")
    assert adopted.returncode == 0, adopted.stderr
    assert "note: plan changed (--override-plan): starting at stage 2 'mixed'" in adopted.stderr
    assert (out / "gpt2ish.stage-simple.lmp").read_bytes() == simple_checkpoint  # not trained again
    stats = load_stats(out / "gpt2ish.stats.jsonl")
    assert [r["stage"] for r in stats.train] == ["simple"] * 5 + ["mixed"] * 5
    assert [r["steps"] for r in stats.train] == list(range(1, 11))
    # 'mixed' started over: its cursor counts the 2 steps since the switch, not 5.
    progress = progress_of(out / "gpt2ish.lmp")
    assert progress["stage_index"] == 1
    assert progress["batcher"]["counters"]["samples"] == 2 * 8


@pytest.mark.slow
def test_saved_datasets_are_used_when_the_originals_are_gone(tmp_path: Path) -> None:
    one_stage_plan(tmp_path, documents=24)
    saved = train(tmp_path, "--save-datasets")
    assert saved.returncode == 0, saved.stderr
    copies = list((tmp_path / "out_gpt" / "datasets").iterdir())
    assert [p.name.rsplit("-", 1)[0] for p in copies] == ["corpus-train"]
    assert not (tmp_path / "out").exists()  # preparing data trains nothing
    (tmp_path / "corpus.jsonl").rename(tmp_path / "moved.jsonl")
    result = train(tmp_path, "--max-steps", "2")
    assert result.returncode == 0, result.stderr
    assert f"dataset 'corpus': reading the saved copy {copies[0]}" in result.stderr
    assert load_stats(tmp_path / "out" / "gpt2ish.stats.jsonl").train[-1]["steps"] == 2


@pytest.mark.slow
def test_hub_plan_offline_fails_fast_naming_the_dataset(tmp_path: Path) -> None:
    started = time.monotonic()
    result = train(tmp_path, plan=str(REPO / "plans" / "wiki.json"))
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0])
    assert "dataset 'wiki' (hub wikimedia/wikipedia" in errors[0]
    assert '"files": [' in errors[0] and "--save-datasets" in errors[0]
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()
