"""Curricula in real runs: per-stage schedules, budgets, context and batch growth, freezing,
mixtures, and bit-exact resume after SIGINT at a stage switch and mid-stage."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch
from lmp_testing import (
    TINY_FLAGS,
    WORDS,
    assert_bitwise_equal,
    load_components,
    records_without_timing,
    train_in_process,
    write_corpus,
    write_plan,
)

from lmplay.plan.datasets import PlanData
from lmplay.plan.registry import load_plan
from lmplay.stats.runs import load_stats
from lmplay.train import trainer as trainer_module
from lmplay.train.schedule import StageSchedule, stage_lr_at

DATASETS = {
    "a": {"files": ["a.jsonl"], "validation_fraction": 0.1},
    "b": {"files": ["b.jsonl"], "validation_fraction": 0.1},
}
FLAGS = [
    *TINY_FLAGS,
    "--num-blocks",
    "1",
    "--validation-interval",
    "24",
    "--save-interval",
    "10000",
]
SGD = ["--optimizer", "sgd", "--lr", "0.05"]


def make_folder(folder: Path, stages: list[dict], sizes: tuple[int, int] = (24, 10)) -> Path:
    """Corpora 'a' and 'b' of `sizes` documents; 'b' of one-sentence documents when it has < 5."""
    folder.mkdir(parents=True, exist_ok=True)
    write_corpus(folder / "a.jsonl", sizes[0], seed=1)
    if sizes[1] < 5:  # short enough that a mixture soon repeats it
        rows = [{"text": f"The {word} sang at night."} for word in WORDS[: sizes[1]]]
        (folder / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        write_corpus(folder / "b.jsonl", sizes[1], seed=2)
    write_plan(folder, stages, DATASETS)
    return folder


def train(folder: Path, out: str, *extra: str) -> Path:
    code, err = train_in_process(
        folder, ["--training-plan", "plan.json", "--out-dir", out, *FLAGS, *extra]
    )
    assert code == 0, err[-3000:]
    return folder / out


def test_wsd_holds_the_peak_then_decays_linearly_over_the_last_fraction() -> None:
    wsd = StageSchedule(peak_lr=1.0, kind="wsd", total=100, unit="steps", min_lr=0.1,
                        warmup_steps=10, warmup_start_fraction=0.1, decay=20.0)  # fmt: skip
    assert stage_lr_at(wsd, 0, 0) == pytest.approx(0.1)
    assert stage_lr_at(wsd, 5, 5) == pytest.approx(0.1 + 0.9 * 5 / 10)
    for step in (10, 50, 80):
        assert stage_lr_at(wsd, step, step) == 1.0
    for step in (85, 90, 99, 100):
        assert stage_lr_at(wsd, step, step) == pytest.approx(1.0 - 0.9 * (step - 80) / 20)
    tokens = StageSchedule(peak_lr=2.0, kind="wsd", total=1000, min_lr=0.0, decay=100.0)
    assert stage_lr_at(tokens, 40, 899) == 2.0 and stage_lr_at(tokens, 41, 950) == pytest.approx(
        1.0
    )
    cosine = StageSchedule(peak_lr=1.0, kind="cosine", total=10, unit="steps")
    assert stage_lr_at(cosine, 5, 5) == pytest.approx(0.5) and stage_lr_at(cosine, 10, 10) == 0


CURRICULUM = [
    {"name": "short", "mix": {"a": 0.6, "b": 0.4}, "tokens": 600, "context_len": 32,
     "batch_size": 4, "lr": 3e-3, "lr_schedule": "constant"},
    {"name": "long", "datasets": ["a"], "steps": 4, "context_len": 64, "batch_size": 6,
     "mini_batch_size": 2, "lr_schedule": "wsd", "decay_fraction": 0.5, "freeze": ["wte.*"],
     "reset_optimizer": True},
]  # fmt: skip


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan folder with its uninterrupted run in `straight/`."""
    folder = make_folder(tmp_path_factory.mktemp("curriculum"), CURRICULUM, (24, 4))
    train(folder, "straight")
    return folder


def test_each_stage_trains_with_its_own_budget_schedule_context_and_batch(curriculum) -> None:
    stats = load_stats(curriculum / "straight" / "gpt2ish.stats.jsonl")
    short = [r for r in stats.train if r["stage"] == "short"]
    long = [r for r in stats.train if r["stage"] == "long"]
    tokens = [sum(r["source_tokens"].values()) for r in short]
    assert tokens[-2] < 600 <= tokens[-1]  # the tokens budget, checked per step
    b_held = PlanData(load_plan(str(curriculum / "plan.json"))).split("b").train
    assert short[-1]["source_tokens"]["b"] > sum(len(row["truth_ids"]) for row in b_held)
    assert short[-1]["source_passes"]["b"] >= 1 and short[0]["source_passes"] == {"a": 0, "b": 0}
    assert all("source_passes" not in r for r in long)  # an unmixed stage repeats nothing
    assert len(long) == 4  # the steps budget, exactly
    assert {(r["context_len"], r["batch_size"]) for r in short} == {(32, 4)}
    assert {(r["context_len"], r["batch_size"]) for r in long} == {(64, 6)}
    # the first stage warms up from the flags (2 steps), then holds its lr
    assert [r["lr"] for r in short[:3]] == pytest.approx([3e-4, 3e-4 + 2.7e-3 / 2, 3e-3])
    # the second carries lr 3e-3 over, resets its optimizer (so warms up again: 2 steps), and
    # decays over its last 2 steps to min_lr 0
    wsd = StageSchedule(3e-3, "wsd", 4, "steps", 0.0, 2, 0.1, 2.0)
    assert [r["lr"] for r in long] == pytest.approx([stage_lr_at(wsd, i, i) for i in range(4)])
    assert [r["lr"] for r in long] == pytest.approx([3e-4, 1.65e-3, 3e-3, 1.5e-3])
    assert (
        sum(stats.train[-1]["source_tokens"].values())
        == load_components(curriculum / "straight" / "gpt2ish.lmp")["runner"]["state"][
            "loss_tokens"
        ]
    )
    reasons = [(s["stage"], s["reason"]) for s in stats.stops]
    assert reasons == [("short", "tokens"), ("long", "steps")]


def test_frozen_parameters_do_not_move_in_their_stage(curriculum) -> None:
    before = load_components(curriculum / "straight" / "gpt2ish.stage-short.lmp")["model"]["state"]
    after = load_components(curriculum / "straight" / "gpt2ish.lmp")["model"]["state"]
    assert torch.equal(before["wte.weight"], after["wte.weight"])
    assert not torch.equal(before["wpe.weight"], after["wpe.weight"])


def sigint_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """SIGINT to this process at the N-th pass through a named point of the loop ("validate:3")."""
    name, count = point.split(":")
    seen: Counter[str] = Counter()
    original = trainer_module.pause_point

    def pause(here: str) -> None:
        seen[here] += 1
        if here == name and seen[here] == int(count):
            os.kill(os.getpid(), signal.SIGINT)
        original(here)

    monkeypatch.setattr(trainer_module, "pause_point", pause)


@pytest.mark.slow
def test_sigint_at_a_switch_and_mid_stage_then_rerun_is_bitwise_identical(
    curriculum, monkeypatch
) -> None:
    # validate:N counts validation sets scored (two per point); each rerun counts afresh:
    # mid-way through the repeating mixture, at the switch, then mid-way through the wsd stage
    points = ("validate:3", "stage_end:1", "validate:1")
    out = "interrupted"
    args = ["--training-plan", "plan.json", "--out-dir", out, *FLAGS]
    for point in points:
        with monkeypatch.context() as patch:
            sigint_at(patch, point)
            code, err = train_in_process(curriculum, args)
        assert code == 130 and "stopped by SIGINT" in err, err[-3000:]
    assert train_in_process(curriculum, args)[0] == 0
    straight, interrupted = curriculum / "straight", curriculum / out
    for name in ("gpt2ish.lmp", "gpt2ish.stage-short.lmp", "gpt2ish.stage-long.lmp"):
        assert_bitwise_equal(load_components(straight / name), load_components(interrupted / name))
    stats = "gpt2ish.stats.jsonl"
    assert records_without_timing(straight / stats) == records_without_timing(interrupted / stats)


CONTEXT_GROWTH = [
    {"name": "ctx32", "datasets": ["a"], "context_len": 32, "batch_size": 4},
    {"name": "ctx64", "datasets": ["a", "b"], "context_len": 64, "batch_size": 6},
]


def test_context_growth_trains_every_token_once_and_splits_agree(tmp_path, monkeypatch) -> None:
    taken: list[tuple[str, list]] = []
    real_prepare = trainer_module.prepare_mini_batches

    def spy(samples, mini_batch_size, pack_len, pin):  # the rows each step trains on
        taken.append((pack_len, list(samples)))
        return real_prepare(samples, mini_batch_size, pack_len, pin)

    monkeypatch.setattr(trainer_module, "prepare_mini_batches", spy)
    whole = train(make_folder(tmp_path / "whole", CONTEXT_GROWTH, (6, 3)), "out", *SGD)
    monkeypatch.setattr(trainer_module, "prepare_mini_batches", real_prepare)
    split = [dict(CONTEXT_GROWTH[0], mini_batch_size=3), dict(CONTEXT_GROWTH[1], mini_batch_size=4)]
    parts = train(make_folder(tmp_path / "split", split, (6, 3)), "out", *SGD)

    plan = load_plan(str(tmp_path / "whole" / "plan.json"))
    data = PlanData(plan)
    for index, (context, stage) in enumerate(zip((32, 64), plan.stages)):
        docs = data.stage_documents(stage)
        samples = [s for pack_len, batch in taken if pack_len == context for s in batch]
        assert samples and max(s.num_tokens for s in samples) <= context + 1
        ledger = Counter((s.doc, s.offset + i) for s in samples for i in range(len(s.truth)))
        lengths = docs.truth_lengths()
        assert set(ledger) == {(d, i) for d in range(len(docs)) for i in range(int(lengths[d]))}
        assert set(ledger.values()) == {1}, index
    a = load_components(whole / "gpt2ish.lmp")["model"]["state"]
    b = load_components(parts / "gpt2ish.lmp")["model"]["state"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(a[k].abs().max()) for k in a)
    assert worst / scale <= 1e-6 and not math.isnan(worst)


def test_override_plan_keeps_unchanged_stages_done_and_reruns_a_changed_one(curriculum) -> None:
    shutil.copytree(curriculum / "straight", curriculum / "override")
    plan = json.loads((curriculum / "plan.json").read_text())
    plan["stages"][1]["lr"] = 1e-3  # the anneal stage changes, the mixed stage does not
    (curriculum / "plan2.json").write_text(json.dumps(plan))
    args = ["--training-plan", "plan2.json", "--out-dir", "override", *FLAGS, "--override-plan"]
    code, err = train_in_process(curriculum, args)
    assert code == 0 and "starting at stage 2 'long'" in err, err[-3000:]
    before = load_stats(curriculum / "straight" / "gpt2ish.stats.jsonl").train
    after = load_stats(curriculum / "override" / "gpt2ish.stats.jsonl").train
    assert [r for r in after if r["stage"] == "short"] == [
        r for r in before if r["stage"] == "short"
    ]
    rerun = [r for r in after if r["stage"] == "long"][-4:]
    assert [r["lr"] for r in rerun] == pytest.approx([1e-4, 5.5e-4, 1e-3, 5e-4])
