from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest

from lmplay.data.hub import hub_reachable
from lmplay.data.source_spec import SourceSpec, source_fingerprint
from lmplay.data.sources import load_source
from lmplay.errors import HubUnavailableError, UsageError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_of(ds: datasets.Dataset) -> list[tuple[str, str]]:
    return list(zip(ds["prompt"], ds["truth"], strict=True))


# --- bundled corpus and local files ---------------------------------------------------------


def test_bundled_shakespeare_loads_as_titled_text() -> None:
    ds = load_source(SourceSpec(name="bard", bundled="shakespeare"))
    assert ds.column_names == ["prompt", "truth"]
    assert len(ds) == 264
    assert set(ds["prompt"]) == {""}
    first = ds[0]["truth"]
    assert first.startswith("The Tempest, scene 1\n\n")
    assert "Boatswain!" in first


def test_jsonl_with_title_column(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "wiki.jsonl",
        [
            {"title": "Anarchism", "text": "Anarchism is a political philosophy."},
            {"title": "", "text": "x"},
        ],
    )
    spec = SourceSpec(
        name="wiki", files=("wiki.jsonl",), title_column="title", base_dir=str(tmp_path)
    )
    ds = load_source(spec)
    assert rows_of(ds) == [("", "Anarchism\n\nAnarchism is a political philosophy."), ("", "x")]


def test_prompt_truth_columns_and_missing_values(tmp_path: Path) -> None:
    rows = [{"q": "What is 2+2?", "a": " 4", "extra": 1}, {"q": None, "a": "alone", "extra": 2}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    ds = load_source(SourceSpec(name="qa", files=(str(path),), prompt_column="q", truth_column="a"))
    assert ds.column_names == ["prompt", "truth"]
    assert rows_of(ds) == [("What is 2+2?", " 4"), ("", "alone")]


def test_text_file_is_one_document(tmp_path: Path) -> None:
    text = "First line.\nSecond line.\n\nA new paragraph, kept intact.\n"
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    (tmp_path / "other.txt").write_text("Other book.", encoding="utf-8")
    ds = load_source(SourceSpec(name="books", files=("*.txt",), base_dir=str(tmp_path)))
    assert ds["truth"] == [text, "Other book."]  # sorted glob order, text unchanged


def test_gzipped_jsonl_json_list_and_parquet(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}."} for i in range(5)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "b.json").write_text(json.dumps(rows), encoding="utf-8")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    expected = [r["text"] for r in rows]
    for name in ("a.jsonl.gz", "b.json", "c.parquet"):
        ds = load_source(SourceSpec(name=name, files=(str(tmp_path / name),)))
        assert ds["truth"] == expected, name


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rows.data", [{"text": "hello"}])
    spec = SourceSpec(name="odd", files=(str(tmp_path / "rows.data"),), format="jsonl")
    assert load_source(spec)["truth"] == ["hello"]


def test_save_to_disk_folder_and_its_arrow_files(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"body": ["a.", "b."]}).save_to_disk(str(saved))
    as_disk = load_source(SourceSpec(name="d", files=(str(saved),), text_column="body"))
    as_arrow = load_source(SourceSpec(name="a", files=(f"{saved}/*.arrow",), text_column="body"))
    assert as_disk["truth"] == as_arrow["truth"] == ["a.", "b."]
    # Reading leaves the user's folder as it was: datasets' own cache holds derived files.
    assert sorted(p.name for p in saved.iterdir()) == [
        "data-00000-of-00001.arrow",
        "dataset_info.json",
        "state.json",
    ]


def test_dataset_dict_folder_picks_the_split(tmp_path: Path) -> None:
    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["t"]}),
            "validation": datasets.Dataset.from_dict({"text": ["v"]}),
        }
    ).save_to_disk(str(folder))
    spec = SourceSpec(name="dd", files=(str(folder),), split="validation")
    assert load_source(spec)["truth"] == ["v"]
    with pytest.raises(UsageError, match=r"no split 'test'.*train.*validation"):
        load_source(SourceSpec(name="dd", files=(str(folder),), split="test"))


def test_local_files_have_only_a_train_split(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "t"}])
    with pytest.raises(UsageError, match=r"'x'.*no split 'validation', only 'train'"):
        load_source(SourceSpec(name="x", files=(str(path),), split="validation"))


# --- errors that name what is wrong ---------------------------------------------------------


def test_missing_column_names_dataset_column_and_existing_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"body": "b", "title": "t"}])
    with pytest.raises(UsageError) as caught:
        load_source(SourceSpec(name="mine", files=(str(path),)))
    message = str(caught.value)
    assert "'mine'" in message and "'text'" in message
    assert "body" in message and "title" in message


def test_non_text_column_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": [1, 2]}])
    with pytest.raises(UsageError, match=r"'mine'.*'text'.*not text"):
        load_source(SourceSpec(name="mine", files=(str(path),)))


def test_missing_file_and_empty_glob_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"'gone'.*file not found.*nothere\.jsonl"):
        load_source(SourceSpec(name="gone", files=("nothere.jsonl",), base_dir=str(tmp_path)))
    with pytest.raises(UsageError, match=r"no file matches .*\*\.parquet"):
        load_source(SourceSpec(name="gone", files=("*.parquet",), base_dir=str(tmp_path)))


def test_unreadable_or_ambiguous_files(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"'broken'.*cannot read"):
        load_source(SourceSpec(name="broken", files=(str(tmp_path / "bad.jsonl"),)))
    (tmp_path / "notes.md").write_text("# hi", encoding="utf-8")
    with pytest.raises(UsageError, match=r"notes\.md.*set format"):
        load_source(SourceSpec(name="md", files=(str(tmp_path / "notes.md"),)))
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    with pytest.raises(UsageError, match=r"mixes file formats"):
        load_source(SourceSpec(name="mix", files=("a.txt", "bad.jsonl"), base_dir=str(tmp_path)))
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match=r"not a save_to_disk folder"):
        load_source(SourceSpec(name="dir", files=(str(tmp_path / "plain"),)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of hub, files or bundled"),
        ({"hub": "a/b", "bundled": "shakespeare"}, "got hub and bundled"),
        ({"bundled": "homer"}, "unknown bundled corpus 'homer'.*shakespeare"),
        ({"files": ("x.txt",), "format": "csv"}, "unknown format 'csv'"),
        ({"files": ("x.jsonl",), "prompt_column": "q"}, "prompt_column and truth_column"),
        ({"hub": "a/b", "format": "json"}, "format applies to local files"),
    ],
)
def test_contradictory_specs_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(UsageError, match=f"dataset 'ds'.*{message}"):
        SourceSpec(name="ds", **fields)


# --- hub -----------------------------------------------------------------------------------


@pytest.fixture
def fresh_hub_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Forget the cached probe result; monkeypatch restores every offline flag afterwards."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setattr(datasets.config, name, datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE
    )
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    hub_reachable.cache_clear()
    yield monkeypatch
    hub_reachable.cache_clear()


def go_online(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", endpoint)


def test_offline_hub_dataset_fails_fast_with_a_hint(fresh_hub_probe: pytest.MonkeyPatch) -> None:
    spec = SourceSpec(name="wiki", hub="wikimedia/wikipedia", config="20231101.en")
    started = time.monotonic()
    with pytest.raises(HubUnavailableError) as caught:
        load_source(spec)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert "wikimedia/wikipedia" in message and "20231101.en" in message
    assert "not reachable and not cached" in message and '"files"' in message
    assert "--save-datasets" in message


def test_unreachable_hub_switches_datasets_offline(fresh_hub_probe: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:  # a port nobody listens on: the connection is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    go_online(fresh_hub_probe, f"https://127.0.0.1:{port}")
    assert hub_reachable() is False
    assert datasets.config.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match=r"no/such-dataset"):
        load_source(SourceSpec(name="x", hub="no/such-dataset"))
    assert time.monotonic() - started < 10


def test_reachable_hub_leaves_online_mode_alone(fresh_hub_probe: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        go_online(fresh_hub_probe, f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert hub_reachable() is True
    assert datasets.config.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in os.environ


def test_cached_hub_dataset_loads_without_the_hub(
    fresh_hub_probe: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Lay out the cache an earlier online run of load_dataset("lmplay-test/tiny") leaves behind.
    cache = tmp_path / "cache"
    path = write_jsonl(tmp_path / "tiny.jsonl", [{"text": "one."}, {"text": "two."}])
    datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    (built,) = [p for p in (cache / "json").glob("*/*/*") if p.is_dir()]
    target = cache / "lmplay-test___tiny" / "default" / built.parent.name / built.name
    shutil.copytree(built, target)
    (target / "json-train.arrow").rename(target / "tiny-train.arrow")
    info = json.loads((target / "dataset_info.json").read_text())
    info.update(dataset_name="tiny", builder_name="tiny")
    (target / "dataset_info.json").write_text(json.dumps(info))
    fresh_hub_probe.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))

    ds = load_source(SourceSpec(name="tiny", hub="lmplay-test/tiny"))
    assert rows_of(ds) == [("", "one."), ("", "two.")]


# --- saving and fingerprints ---------------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_the_definition() -> None:
    spec = SourceSpec(
        name="wiki", hub="wikimedia/wikipedia", config="20231101.en", title_column="title"
    )
    # Pinned: a change here invalidates every saved plan guard, so it must be deliberate.
    assert source_fingerprint(spec) == "2fce56cf08b7c522"
    same_data = SourceSpec(
        name="renamed",
        hub="wikimedia/wikipedia",
        config="20231101.en",
        title_column="title",
        base_dir="/elsewhere",
    )
    assert source_fingerprint(same_data) == source_fingerprint(spec)
    other = SourceSpec(
        name="wiki", hub="wikimedia/wikipedia", config="20231101.fr", title_column="title"
    )
    assert source_fingerprint(other) != source_fingerprint(spec)
    prompts = SourceSpec(name="x", files=("a.jsonl",), prompt_column="q", truth_column="a")
    trained = SourceSpec(
        name="x", files=("a.jsonl",), prompt_column="q", truth_column="a", train_prompt=True
    )
    assert source_fingerprint(prompts) != source_fingerprint(trained)
