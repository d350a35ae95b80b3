from pathlib import Path

import orjson
import pytest

from lmplay.errors import UsageError
from lmplay.stats.runs import FORMAT, find_stats_files, load_stats

HEADER = orjson.dumps({"format": FORMAT, "version": 2, "run": "r"}) + b"\n"


def _write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc))
    return path


def _doc(**overrides: object) -> dict:
    doc = {
        "format": FORMAT,
        "version": 1,
        "run": "r",
        "exp": "gpt2ish",
        "model": "r.lmp",
        "meta": {"plan": "tiny"},
        "train": [{"samples": 4, "tokens": 100, "loss": 5.0, "custom": [1, 2]}],
        "validation": {"v": [{"samples": 4, "tokens": 100, "loss": None}]},
    }
    return doc | overrides


def test_load_keeps_unknown_keys_and_null_loss(tmp_path: Path) -> None:
    stats = load_stats(_write(tmp_path / "r.stats.json", _doc()))
    assert stats.run == "r" and stats.exp == "gpt2ish" and stats.meta == {"plan": "tiny"}
    assert stats.train[0]["custom"] == [1, 2]
    assert stats.validation["v"][0]["loss"] is None
    assert stats.tokens == 100


def test_run_name_defaults_to_file_stem(tmp_path: Path) -> None:
    doc = _doc()
    del doc["run"]
    assert load_stats(_write(tmp_path / "my_model.stats.json", doc)).run == "my_model"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"format": "lmplay-stats", "version": 1, "train": [{"sam', "not valid JSON"),
        (orjson.dumps({"format": "other"}), "not an lmplay stats file"),
        (orjson.dumps([1, 2]), "not an lmplay stats file"),
        (orjson.dumps(_doc(version=3)), "newer"),
        (HEADER + b'{"kind": "train", "record": {"samples": 1}}\n', "line 2 .*'tokens'"),
        (HEADER + b"[1]\n", 'line 2 is not an object with a "kind"'),
        (HEADER + b"{oops\n", "line 2 is not valid JSON"),
        (
            HEADER + b'{"kind": "validation", "record": {"samples": 1, "tokens": 1, "loss": 1}}\n',
            'needs a "set"',
        ),
        (orjson.dumps({"format": "lmplay-stats", "version": 3}) + b"\n", "newer"),
        (orjson.dumps(_doc(train=[{"samples": 1, "loss": 2.0}])), "'tokens'"),
        (orjson.dumps(_doc(train={"a": 1})), "must be a list"),
        (orjson.dumps(_doc(validation=[])), "validation"),
    ],
)
def test_bad_files_raise_usage_error_naming_the_file(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "bad.stats.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=needle) as info:
        load_stats(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_stats(tmp_path / "nope.stats.json")


def test_json_lines_files_read_like_version_1_documents(tmp_path: Path) -> None:
    doc = _doc()
    lines = [
        {"kind": "train", "record": doc["train"][0]},
        {"kind": "validation", "set": "v", "record": doc["validation"]["v"][0]},
        {"kind": "profile", "phase": "done"},
    ]
    path = tmp_path / "r.stats.jsonl"
    head = {k: v for k, v in doc.items() if k not in ("train", "validation")} | {"version": 2}
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in [head, *lines]))
    new, old = load_stats(path), load_stats(_write(tmp_path / "r.stats.json", doc))
    assert (new.train, new.validation, new.meta, new.run) == (
        old.train,
        old.validation,
        old.meta,
        "r",
    )
    assert new.other == [lines[2]] and old.other == []


def test_find_stats_files_recurses_dedups_and_reports_missing(tmp_path: Path) -> None:
    a = _write(tmp_path / "x" / "a.stats.json", _doc())
    b = _write(tmp_path / "x" / "deep" / "b.stats.jsonl", _doc())
    _write(tmp_path / "x" / "notes.json", {})
    files, missing = find_stats_files([tmp_path / "x", a, tmp_path / "gone"])
    assert sorted(files) == sorted([a, b]) and len(files) == 2
    assert missing == [tmp_path / "gone"]


def test_a_checkpoint_path_stands_for_its_runs_stats(tmp_path: Path) -> None:
    from lmplay.run_files import RunFiles
    from lmplay.stats.runs import find_stats_files

    files = RunFiles(tmp_path / "a" / "run.lmp")
    files.folder.mkdir()
    files.stats.write_text("{}\n")
    assert find_stats_files([files.checkpoint]) == ([files.stats], [])
    gone = tmp_path / "b" / "run.lmp"
    assert find_stats_files([gone]) == ([], [gone])
