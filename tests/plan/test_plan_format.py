"""Plan files: every shipped plan validates; malformed plans name the bad field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmplay.errors import UsageError
from lmplay.plan.format import parse_plan
from lmplay.plan.registry import builtin_folder, builtin_plan_names, load_plan

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "plans").glob("*.json"))


def base_plan() -> dict:
    return {
        "datasets": {"a": {"files": ["a.jsonl"]}, "b": {"bundled": "shakespeare"}},
        "stages": [{"datasets": ["a"], "epochs": 0.5}, {"datasets": ["a", "b"], "epochs": 2}],
    }


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_plan_file_validates(path: Path) -> None:
    plan = load_plan(str(path))
    assert plan.stages
    assert len(set(plan.stage_fingerprints())) == len(plan.stages)


@pytest.mark.parametrize("name", builtin_plan_names())
def test_builtin_plans_load_by_name_and_match_the_shipped_files(name: str) -> None:
    plan = load_plan(name)
    assert plan.name == name
    shipped = REPO / "plans" / f"{name}.json"
    assert json.loads(shipped.read_text()) == plan.raw


def test_every_shipped_plan_file_is_a_builtin_plan() -> None:
    assert [p.stem for p in SHIPPED] == builtin_plan_names()
    assert (REPO / "plans" / "data").resolve() == (builtin_folder() / "data").resolve()


@pytest.mark.parametrize("name", builtin_plan_names())
def test_local_files_of_shipped_plans_exist_by_name_and_by_path(name: str) -> None:
    for plan in (load_plan(name), load_plan(str(REPO / "plans" / f"{name}.json"))):
        for dataset in plan.datasets.values():
            for pattern in dataset.source.files:
                assert (Path(plan.base_dir) / pattern).is_file(), (plan.base_dir, pattern)


def test_parse_defaults_and_fractional_epochs() -> None:
    plan = parse_plan(base_plan(), origin="p.json", base_dir="/data")
    assert plan.name == "p"
    assert [s.name for s in plan.stages] == ["a", "a+b"]
    assert plan.stages[0].epochs == 0.5
    assert plan.datasets["a"].source.files == ("a.jsonl",)
    assert plan.datasets["a"].source.base_dir == "/data"
    assert plan.datasets["a"].validation_fraction == 0.02


def test_old_steps_key_still_reads_with_a_warning_and_repeats_get_numbered(capsys) -> None:
    raw = base_plan()
    raw["steps"] = [{"datasets": ["a"]}, {"datasets": ["a"]}]
    del raw["stages"]
    plan = parse_plan(raw, origin="p.json")
    assert [s.name for s in plan.stages] == ["a-1", "a-2"]
    assert plan.stages[0].fingerprint(plan) != plan.stages[1].fingerprint(plan)
    assert "'steps' is the old name of 'stages'" in capsys.readouterr().err
    assert "steps" not in plan.raw and len(plan.raw["stages"]) == 2  # what checkpoints store


def test_original_lmplay_stage_spellings_read_as_canonical_stages(capsys) -> None:
    canonical = base_plan()
    canonical["stages"] = [{"name": "warm", "datasets": ["a"], "epochs": 0.5}]
    one_stage = {k: v for k, v in base_plan().items() if k != "stages"}
    one_stage["stage"] = {"name": "warm", "dataset": "a", "epochs": 0.5}
    keyed = {**one_stage, "stages": [{"warm": {"dataset": ["a"], "epochs": 0.5}}]}
    del keyed["stage"]
    expected = parse_plan(canonical, origin="p.json")
    for raw in (one_stage, keyed):
        plan = parse_plan(raw, origin="p.json")
        assert plan.stages == expected.stages and plan.raw == expected.raw
    assert capsys.readouterr().err == ""  # documented spellings, not old names
    with pytest.raises(UsageError, match="give one of 'stages', 'stage', not several"):
        parse_plan({**canonical, "stage": one_stage["stage"]}, origin="p.json")


def test_fingerprint_changes_with_the_stage_definition() -> None:
    plan = parse_plan(base_plan(), origin="p.json")
    changed = base_plan()
    changed["stages"][1]["epochs"] = 3
    other = parse_plan(changed, origin="p.json")
    assert plan.stage_fingerprints()[0] == other.stage_fingerprints()[0]
    assert plan.stage_fingerprints()[1] != other.stage_fingerprints()[1]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(colour="red"), "unknown key 'colour'"),
        (lambda p: p["stages"][0].update(epochs=-1), r"stages\[0\].epochs: must be a number > 0"),
        (lambda p: p["stages"][0].update(epochs="two"), r"stages\[0\].epochs"),
        (lambda p: p["stages"][1].update(datasets=["zzz"]), "unknown dataset 'zzz'; defined: a, b"),
        (lambda p: p["stages"][0].update(speed=3), r"stages\[0\]: unknown key 'speed'"),
        (lambda p: p["datasets"]["a"].update(colum="x"), "datasets.a: unknown key 'colum'"),
        (lambda p: p["datasets"]["a"].update(hub="x/y"), "exactly one of 'hub', 'files'"),
        (lambda p: p["datasets"]["a"].update(prompt_column="q"), "go together"),
        (lambda p: p.update(stages=[]), "'stages' must be a non-empty list"),
        (lambda p: p.update(datasets={}), "'datasets' must be a non-empty object"),
        (lambda p: p.update(validation_fraction=1.5), "validation_fraction"),
        (lambda p: [s.update(name="same") for s in p["stages"]], "repeated: same"),
    ],
)
def test_malformed_plans_name_the_bad_field(mutate, message: str) -> None:
    raw = base_plan()
    mutate(raw)
    with pytest.raises(UsageError, match=message):
        parse_plan(raw, origin="bad.json")


def test_malformed_json_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"datasets": {,}')
    with pytest.raises(UsageError, match=r"malformed JSON at line 1 column"):
        load_plan(str(broken))
    with pytest.raises(UsageError, match="no such file"):
        load_plan(str(tmp_path / "absent.json"))
    with pytest.raises(UsageError, match=r"built-in plans: .*tiny"):
        load_plan("nonesuch")
