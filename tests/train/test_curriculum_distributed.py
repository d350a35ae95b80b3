"""A mixed stage that repeats a dataset, on 2 ranks (gloo): the same run as one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from lmp_testing import TrainerProcess, write_corpus, write_plan
from test_distributed import (
    SGD,
    args_for,
    assert_same_figures,
    assert_same_position,
    initial_weights,
    train_here,
    update_difference,
)

from lmplay.stats.runs import load_stats


@pytest.mark.slow
def test_two_ranks_on_a_repeating_mixture_equal_one_process(tmp_path: Path) -> None:
    write_corpus(tmp_path / "web.jsonl", 16, seed=1)
    write_corpus(tmp_path / "code.jsonl", 3, seed=2)
    datasets = {
        "web": {"files": ["web.jsonl"], "validation_fraction": 0.1},
        "code": {"files": ["code.jsonl"], "validation_fraction": 0.0},
    }
    stage = {"name": "mixed", "mix": {"web": 0.5, "code": 0.5}, "steps": 4, "context_len": 32}
    write_plan(tmp_path, [stage], datasets)
    start = initial_weights(tmp_path)
    one = train_here(tmp_path, "one", *SGD)
    job = TrainerProcess(tmp_path, args_for(tmp_path, "two", *SGD), nproc=2)
    assert job.finish() == 0, job.output
    two = tmp_path / "two" / one.name
    assert update_difference(two, one, start) < 1e-6
    assert_same_position(two, one)
    stats = "gpt2ish.stats.jsonl"
    assert_same_figures(tmp_path / "two" / stats, tmp_path / "one" / stats, 1e-6)
    records = load_stats(tmp_path / "two" / stats).train
    assert [r["source_tokens"] for r in records] == [
        r["source_tokens"] for r in load_stats(tmp_path / "one" / stats).train
    ]
