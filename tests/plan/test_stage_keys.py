"""Curriculum keys of a stage: what a plan may say, and every refusal before any data is read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, cli_in_process, write_corpus, write_plan

from lmplay.plan.format import parse_plan

DATASETS = {"web": {"files": ["web.jsonl"]}, "code": {"files": ["code.jsonl"]}}


def plan_of(*stages: dict) -> dict:
    return {"name": "p", "datasets": DATASETS, "stages": list(stages)}


def test_a_mixed_stage_weighs_its_datasets_and_keeps_their_order() -> None:
    plan = parse_plan(plan_of({"mix": {"code": 1, "web": 3}, "tokens": 100}), origin="p.json")
    stage = plan.stages[0]
    assert stage.datasets == ("code", "web") and stage.name == "code+web"
    assert stage.mix == (("code", 1.0), ("web", 3.0))
    assert stage.repeat and stage.epochs == math.inf and stage.get("tokens") == 100


def test_datasets_and_mix_together_name_the_same_datasets() -> None:
    both = {"datasets": ["web", "code"], "mix": {"code": 1, "web": 1}}
    assert parse_plan(plan_of(both), origin="p").stages[0].datasets == ("web", "code")


def test_without_curriculum_keys_a_stage_keeps_its_fingerprint() -> None:
    old = {"name": "p", "datasets": {"web": {"files": ["w.jsonl"]}}}
    plain = parse_plan(
        {**old, "stages": [{"datasets": ["web"], "epochs": 2, "min_steps": 3}]}, origin="p"
    )
    assert plain.stage_fingerprints() == ["7a438f447a4282d3"]  # what runs before stored
    keyed = parse_plan(plan_of({"datasets": ["web"], "epochs": 2, "lr": 1e-3}), origin="p")
    assert (
        keyed.stage_fingerprints()
        != parse_plan(plan_of({"datasets": ["web"], "epochs": 2}), origin="p").stage_fingerprints()
    )


def test_a_tokens_budget_may_be_written_2e9() -> None:
    plan = parse_plan(plan_of({"datasets": ["web"], "tokens": 2e9}), origin="p")
    assert plan.stages[0].get("tokens") == 2_000_000_000


def test_a_budget_alone_lifts_the_one_epoch_default() -> None:
    stages = [{"datasets": ["web"], "steps": 5}, {"datasets": ["web"], "steps": 5, "epochs": 2}]
    plan = parse_plan(plan_of(*stages), origin="p")
    assert [s.epochs for s in plan.stages] == [math.inf, 2.0]


REFUSED = [
    ({"mix": {"web": -1, "code": 1}}, r"'web\+code'\.mix\.web: must be a finite number >= 0"),
    ({"mix": {"web": 0, "code": 0}}, r"'web\+code'\.mix: the weights sum to 0"),
    ({"mix": {"web": float("nan"), "code": 1}}, r"mix\.web: must be a finite number >= 0, got nan"),
    ({"mix": {"web": 1, "books": 1}}, r"'web\+books'\.mix: unknown dataset 'books'; defined: web"),
    ({"datasets": ["web"], "repeat": False}, r"'web'\.repeat: applies to a stage with 'mix' only"),
    ({"datasets": ["web"], "tokens": 0}, r"'web'\.tokens: must be a positive integer, got 0"),
    ({"datasets": ["web"], "steps": 2.5}, r"'web'\.steps: must be a positive integer, got 2.5"),
    ({"datasets": ["web"], "epochs": 0}, r"stages\[0\]\.epochs: must be a number > 0"),
    ({"datasets": ["web"], "lr_schedule": "step"}, r"'web'\.lr_schedule: unknown schedule 'step'"),
    (
        {"datasets": ["web"], "decay_fraction": 1.5},
        r"decay_fraction: must be a fraction in \(0, 1\]",
    ),
    ({"datasets": ["web"], "decay_tokens": 9}, r"decay_tokens: needs a 'tokens' budget"),
    ({"datasets": ["web"], "freeze": []}, r"'web'\.freeze: must be a list of parameter-name"),
    ({"datasets": ["web"], "lr": 0}, r"'web'\.lr: must be a rate in \(0, 10\]"),
    ({"datasets": ["web"], "context_len": -4}, r"'web'\.context_len: must be a positive integer"),
]


@pytest.mark.parametrize(("stage", "message"), REFUSED)
def test_bad_curriculum_keys_are_refused_naming_plan_stage_and_key(stage, message) -> None:
    with pytest.raises(Exception, match=message) as refused:
        parse_plan(plan_of(stage), origin="curriculum.json")
    assert str(refused.value).startswith("plan curriculum.json: stages[0]")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stage-keys")
    write_corpus(folder / "web.jsonl", 6, seed=1)
    write_corpus(folder / "code.jsonl", 6, seed=2)
    return folder


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"mix": {"web": 1, "code": -2}}, "mix.code: must be a finite number >= 0"),
        ({"datasets": ["web"], "freeze": ["nothing.*"]}, "freeze: pattern 'nothing.*' matches no"),
        (
            {"datasets": ["web"], "context_len": 65},
            "context_len: 65 exceeds the model's maximum of 64",
        ),
        ({"datasets": ["web"], "lr_schedule": "cosine", "min_lr": 1.0}, "min_lr: 1.0 exceeds"),
        (
            {"datasets": ["web"], "lr": 0.5, "weight_decay": 2},
            "weight_decay: lr 0.5 x weight_decay 2",
        ),
    ],
)
def test_the_trainer_refuses_with_one_line_before_reading_data(folder, stage, message) -> None:
    write_plan(folder, [{"name": "s", **stage}], DATASETS)
    out = f"out-{len(list(folder.iterdir()))}"
    result = cli_in_process(
        "trainer", ["--training-plan", "plan.json", "--out-dir", out, *TINY_FLAGS], folder
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: plan "), result.stderr
    assert "stages[0] 's'." in lines[0]
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not (folder / out).exists()  # nothing written, no data read
    assert json.loads((folder / "plan.json").read_text())["stages"][0]["name"] == "s"
