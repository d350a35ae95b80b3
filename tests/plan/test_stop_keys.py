"""Plan keys for stop rules, eval-only sets and sample prompts."""

from __future__ import annotations

import pytest

from lmplay.errors import UsageError
from lmplay.plan.format import parse_plan


def raw_plan(**extra: object) -> dict:
    return {
        "datasets": {
            "a": {"files": ["a.jsonl"]},
            "b": {"files": ["b.jsonl"]},
            "c": {"files": ["c.jsonl"], "validation_split": "test"},
        },
        "stages": [{"name": "one", "datasets": ["a"]}],
        **extra,
    }


def test_eval_only_sets_follow_the_trained_sets_and_keep_their_held_out_share() -> None:
    plan = parse_plan(raw_plan(eval_only=["c", "b"]), origin="p.json")
    assert plan.validation_set_names() == ["a", "c", "b"]
    assert plan.eval_only == ("c", "b")
    assert plan.datasets["b"].validation_fraction == 0.02  # the same rows as when trained on


def test_stop_keys_are_parsed_and_change_the_fingerprint_only_when_set() -> None:
    plain = parse_plan(raw_plan(), origin="p.json")
    raw = raw_plan(eval_only=["b"])
    raw["stages"][0].update(stop_at_loss=3, min_epochs=1, early_stop_set="b", patience=2)
    ruled = parse_plan(raw, origin="p.json")
    assert dict(ruled.stages[0].stop) == {
        "stop_at_loss": 3.0,
        "min_epochs": 1.0,
        "early_stop_set": "b",
        "patience": 2,
    }
    assert plain.stages[0].stop == ()
    assert ruled.stage_fingerprints() != plain.stage_fingerprints()
    # an eval-only set changes what is scored, not what is trained: the same fingerprint
    assert parse_plan(raw_plan(eval_only=["b"]), origin="p.json").stage_fingerprints() == (
        plain.stage_fingerprints()
    )


@pytest.mark.parametrize(
    ("extra", "stage", "message"),
    [
        ({"eval_only": ["a"]}, {}, "'a' is eval_only but a stage trains on it"),
        ({"eval_only": ["zzz"]}, {}, "eval_only names unknown dataset 'zzz'"),
        ({"eval_only": "b"}, {}, "'eval_only' must be a list"),
        ({}, {"early_stop_set": "b"}, "early_stop_set: 'b' is not a validation set"),
        ({}, {"stop_at_loss": -1}, r"stages\[0\].stop_at_loss: must be a finite number >= 0"),
        ({}, {"stop_loss_window": 0}, r"stop_loss_window: must be an integer >= 1"),
        ({}, {"patience": 1.5}, r"patience: must be an integer >= 1"),
        ({"generate_prompts": []}, {}, "'generate_prompts' must be a non-empty list"),
        ({"generate_prompts": [" "]}, {}, "non-empty texts"),
    ],
)
def test_bad_keys_name_the_field(extra: dict, stage: dict, message: str) -> None:
    raw = raw_plan(**extra)
    raw["stages"][0].update(stage)
    with pytest.raises(UsageError, match=message):
        parse_plan(raw, origin="p.json")


def test_an_eval_only_set_must_hold_rows_out() -> None:
    raw = raw_plan(eval_only=["b"])
    raw["datasets"]["b"]["validation_fraction"] = 0
    with pytest.raises(UsageError, match="eval_only dataset 'b' holds out no rows"):
        parse_plan(raw, origin="p.json")
