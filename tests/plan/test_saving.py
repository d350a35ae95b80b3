"""--save-datasets: where copies go, that later runs read them, and never a stale one."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from lmp_testing import write_corpus

from lmplay.data.source_spec import SourceSpec
from lmplay.errors import UsageError
from lmplay.plan.datasets import PlanData
from lmplay.plan.format import parse_plan
from lmplay.plan.saving import datasets_folder, save_plan_datasets, saved_copy_path


@pytest.fixture
def saved_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "saved"
    monkeypatch.setenv("LMP_DATASETS", str(folder))
    return folder


def corpus_plan(folder: Path, **dataset: object):
    write_corpus(folder / "corpus.jsonl", 12)
    raw = {
        "datasets": {
            "corpus": {"files": ["corpus.jsonl"], **dataset},
            "bard": {"bundled": "shakespeare"},
        },
        "stages": [{"datasets": ["corpus"]}],
    }
    return parse_plan(raw, origin="plan.json", base_dir=str(folder))


def test_default_folder_is_under_out_gpt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMP_DATASETS", raising=False)
    assert datasets_folder() == Path("out_gpt") / "datasets"


def test_copy_name_tracks_name_split_and_definition(tmp_path: Path) -> None:
    hub = SourceSpec(name="wiki", hub="wikimedia/wikipedia", config="20231101.en")
    path = saved_copy_path(hub, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("wiki-train-")
    assert saved_copy_path(SourceSpec(**{**vars(hub), "base_dir": "/x"}), tmp_path) == path
    other_config = SourceSpec(name="wiki", hub="wikimedia/wikipedia", config="20231101.fr")
    assert saved_copy_path(other_config, tmp_path) != path
    sliced = SourceSpec(name="wiki", hub="wikimedia/wikipedia", split="train[:10%]")
    assert saved_copy_path(sliced, tmp_path).name.startswith("wiki-train__10__-")
    local = SourceSpec(name="c", files=("c.jsonl",), base_dir="/a")
    # The same relative file name in another plan folder is other data.
    assert saved_copy_path(local, tmp_path) != saved_copy_path(
        SourceSpec(name="c", files=("c.jsonl",), base_dir="/b"), tmp_path
    )


def test_saved_copy_is_read_when_the_original_is_gone(tmp_path: Path, saved_folder: Path) -> None:
    plan = corpus_plan(tmp_path, validation_fraction=0.25)
    before = PlanData(plan).split("corpus")
    paths = save_plan_datasets(plan)
    assert [p.name.rsplit("-", 1)[0] for p in paths] == ["corpus-train"]  # bundled: not copied
    (tmp_path / "corpus.jsonl").unlink()
    after = PlanData(plan).split("corpus")
    assert after.train["truth_ids"] == before.train["truth_ids"]
    assert after.validation["truth_ids"] == before.validation["truth_ids"]


def test_a_changed_definition_is_not_served_the_old_copy(tmp_path, saved_folder) -> None:
    save_plan_datasets(corpus_plan(tmp_path))
    (tmp_path / "corpus.jsonl").unlink()
    changed = corpus_plan(tmp_path, text_column="body")
    (tmp_path / "corpus.jsonl").unlink()
    with pytest.raises(UsageError, match="file not found"):
        PlanData(changed).split("corpus")


def test_saving_again_keeps_the_existing_copy(tmp_path, saved_folder, capsys) -> None:
    plan = corpus_plan(tmp_path)
    (path,) = save_plan_datasets(plan)
    marker = path / "state.json"
    stamp = marker.stat().st_mtime_ns
    assert save_plan_datasets(plan) == [path]
    assert marker.stat().st_mtime_ns == stamp
    assert "already saved" in capsys.readouterr().err
    assert [p.name for p in saved_folder.iterdir()] == [path.name]  # no staging left behind


def test_a_validation_split_is_saved_and_read_too(tmp_path: Path, saved_folder: Path) -> None:
    splits = {
        "train": datasets.Dataset.from_dict({"text": ["One. Two.", "Three."]}),
        "validation": datasets.Dataset.from_dict({"text": ["Held out."]}),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    raw = {
        "datasets": {"d": {"files": ["dd"], "validation_split": "validation"}},
        "stages": [{"datasets": ["d"]}],
    }
    plan = parse_plan(raw, origin="plan.json", base_dir=str(tmp_path))
    paths = save_plan_datasets(plan)
    assert sorted(p.name.rsplit("-", 1)[0] for p in paths) == ["d-train", "d-validation"]
    (tmp_path / "dd").rename(tmp_path / "gone")
    split = PlanData(plan).split("d")
    assert (len(split.train), len(split.validation)) == (2, 1)
