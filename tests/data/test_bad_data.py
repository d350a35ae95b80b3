"""Bad data ends in one line naming the file and row, before any training."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, write_plan

from lmplay.cli.trainer import main
from lmplay.data.source_spec import SourceSpec
from lmplay.data.sources import load_source
from lmplay.errors import UsageError

CASES = {
    "empty file": ("c.jsonl", b"", "file {path} is empty"),
    "empty text file": ("c.txt", b"", "file {path} is empty"),
    "invalid UTF-8": (
        "c.jsonl",
        b'{"text": "Fine."}\n{"text": "Bad \xff."}\n',
        "{path} line 2 is not valid UTF-8 (invalid start byte at byte 15 of the line)",
    ),
    "invalid UTF-8, gzipped": (
        "c.jsonl.gz",
        gzip.compress(b'{"text": "Fine."}\n{"text": "Fine."}\n{"text": "\xc3("}\n'),
        "{path} line 3 is not valid UTF-8",
    ),
    "missing text": (
        "c.jsonl",
        b'{"text": "Fine."}\n{"title": "no text"}\n{"text": "Fine."}\n',
        "{path} row 2 has no 'text' (missing or null); 1 of 3 rows lack it",
    ),
    "null text": (
        "c.jsonl",
        b'{"text": "Fine."}\n{"text": "Fine."}\n{"text": null}\n{"text": null}\n',
        "{path} row 3 has no 'text' (missing or null); 2 of 4 rows lack it",
    ),
    "all empty": ("c.jsonl", b'{"text": ""}\n{"text": ""}\n', "every row's 'text' is empty"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_rows_are_named(tmp_path: Path, case: str) -> None:
    name, data, message = CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UsageError) as error:
        load_source(SourceSpec(name="c", files=(name,), base_dir=str(tmp_path)))
    assert str(error.value).startswith("dataset 'c': ")
    assert message.format(path=path) in str(error.value)


def test_missing_text_across_files_names_the_file_and_its_row(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "A."}\n{"text": "B."}\n')
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "C."}\n{"text": null}\n')
    spec = SourceSpec(name="c", files=("*.jsonl",), base_dir=str(tmp_path))
    with pytest.raises(UsageError, match=f"{tmp_path / 'b.jsonl'} row 2 has no 'text'"):
        load_source(spec)


def test_trainer_stops_with_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "Fine."}\n{"text": null}\n')
    write_plan(
        tmp_path, [{"name": "s", "datasets": ["c"], "epochs": 1}], {"c": {"files": ["c.jsonl"]}}
    )
    monkeypatch.chdir(tmp_path)
    assert main(["--training-plan", "plan.json", "--out-dir", "out", *TINY_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"error: dataset 'c': {tmp_path / 'c.jsonl'} row 2 has no 'text' (missing or null); "
        "1 of 2 rows lack it: fix or remove them"
    )
    assert not (tmp_path / "out" / "gpt2ish.lmp").exists()
