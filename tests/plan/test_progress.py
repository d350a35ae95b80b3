"""Plan progress: state round trip, and carrying progress over to a changed plan (adopt)."""

from __future__ import annotations

import copy

import pytest

from lmplay.errors import UsageError
from lmplay.plan.format import TrainingPlan, parse_plan
from lmplay.plan.progress import PlanProgress

BATCHER_STATE = {"version": 1, "epoch": 0, "position": 5, "piece": 1, "counters": {}}


def raw_plan() -> dict:
    return {
        "datasets": {
            "simple": {"files": ["simple.jsonl"]},
            "harder": {"files": ["harder.jsonl"]},
            "qa": {"files": ["qa.jsonl"], "prompt_column": "q", "truth_column": "a"},
        },
        "stages": [
            {"name": "simple", "datasets": ["simple"], "epochs": 0.5},
            {"name": "mixed", "datasets": ["simple", "harder"], "epochs": 1},
            {"name": "qa", "datasets": ["qa"], "epochs": 1.5},
        ],
    }


def plan_of(raw: dict) -> TrainingPlan:
    return parse_plan(raw, origin="plan.json")


def saved_at(stage_index: int, raw: dict | None = None) -> dict:
    """Progress state of a run of `raw` (default plan) inside stage `stage_index`."""
    progress = PlanProgress(plan_of(raw or raw_plan()))
    for _ in range(stage_index):
        progress.complete_stage()
    if not progress.finished:
        progress.batcher_state = dict(BATCHER_STATE)
    return progress.state_dict()


def changed(mutate) -> TrainingPlan:
    raw = copy.deepcopy(raw_plan())
    mutate(raw)
    return plan_of(raw)


def test_state_round_trip() -> None:
    progress = PlanProgress(plan_of(raw_plan()))
    progress.load_state_dict(saved_at(1))
    assert progress.stage_index == 1
    assert progress.batcher_state == BATCHER_STATE
    assert progress.completed == plan_of(raw_plan()).stage_fingerprints()[:1]


def test_unchanged_plan_continues_in_the_current_stage() -> None:
    progress = PlanProgress(plan_of(raw_plan()))
    note = progress.adopt(saved_at(1))
    assert (progress.stage_index, progress.batcher_state) == (1, BATCHER_STATE)
    assert note == "continuing at stage 2 'mixed'"


def test_changed_current_stage_restarts_it_and_keeps_earlier_stages_done() -> None:
    plan = changed(lambda raw: raw["stages"][1].update(epochs=2))
    progress = PlanProgress(plan)
    assert progress.adopt(saved_at(1)) == "starting at stage 2 'mixed'"
    assert progress.stage_index == 1
    assert progress.batcher_state is None
    assert progress.completed == plan.stage_fingerprints()[:1]


def test_changed_later_stage_keeps_the_position_in_the_current_one() -> None:
    progress = PlanProgress(changed(lambda raw: raw["stages"][2].update(epochs=3)))
    assert progress.adopt(saved_at(1)) == "continuing at stage 2 'mixed'"
    assert progress.batcher_state == BATCHER_STATE


def test_changed_completed_stage_is_redone_from_there() -> None:
    plan = changed(lambda raw: raw["stages"][0].update(epochs=0.25))
    progress = PlanProgress(plan)
    assert progress.adopt(saved_at(2)) == "starting at stage 1 'simple'"
    assert (progress.stage_index, progress.completed, progress.batcher_state) == (0, [], None)


def test_changed_dataset_changes_every_stage_that_uses_it() -> None:
    plan = changed(lambda raw: raw["datasets"]["harder"].update(text_column="body"))
    progress = PlanProgress(plan)
    assert progress.adopt(saved_at(2)) == "starting at stage 2 'mixed'"
    assert progress.completed == plan.stage_fingerprints()[:1]


def test_a_stage_added_after_a_finished_plan_is_the_one_left() -> None:
    def add_stage(raw: dict) -> None:
        raw["stages"].append({"name": "more", "datasets": ["harder"], "epochs": 1})

    plan = changed(add_stage)
    progress = PlanProgress(plan)
    assert progress.adopt(saved_at(3)) == "starting at stage 4 'more'"
    assert progress.completed == plan.stage_fingerprints()[:3]


def test_an_inserted_stage_runs_next_and_later_stages_are_redone() -> None:
    def insert_stage(raw: dict) -> None:
        raw["stages"].insert(1, {"name": "extra", "datasets": ["harder"], "epochs": 1})

    progress = PlanProgress(changed(insert_stage))
    # The batcher seed depends on the stage's position, so 'mixed' (now stage 3) starts over.
    assert progress.adopt(saved_at(2)) == "starting at stage 2 'extra'"
    assert progress.stage_index == 1


def test_removing_the_stages_left_finishes_the_plan() -> None:
    progress = PlanProgress(changed(lambda raw: raw.update(stages=raw["stages"][:1])))
    assert progress.adopt(saved_at(1)) == "every stage of the plan is already done"
    assert progress.finished
    assert progress.batcher_state is None


def test_a_newer_progress_version_is_refused() -> None:
    state = {**saved_at(1), "version": 99}
    progress = PlanProgress(plan_of(raw_plan()))
    with pytest.raises(UsageError, match="plan progress version 99"):
        progress.load_state_dict(state)
    with pytest.raises(UsageError, match="plan progress version 99"):
        progress.adopt(state)
