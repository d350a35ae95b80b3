"""Checkpoints: atomic writes, weights-only loading, and clear refusals of bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lmplay.errors import CheckpointError
from lmplay.train.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint


def components() -> dict:
    return {
        "model": {"state_args": {"exp": "gpt2ish"}, "state": {"w": torch.arange(6.0)}},
        "runner": {"state_args": {}, "state": {"step": 3, "nested": [1, 2.5, None, "x"]}},
    }


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "run.lmp"
    save_checkpoint(path, components())
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lmplay-checkpoint"
    assert raw["format_version"] == FORMAT_VERSION
    loaded = load_checkpoint(path)["components"]
    assert torch.equal(loaded["model"]["state"]["w"], torch.arange(6.0))
    assert loaded["runner"]["state"] == {"step": 3, "nested": [1, 2.5, None, "x"]}
    assert [p.name for p in tmp_path.iterdir()] == ["run.lmp"]  # no temp file left behind


def test_save_replaces_atomically_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "run.lmp"
    save_checkpoint(path, components())
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any failure inside torch.save
        save_checkpoint(path, {"model": {"state_args": {}, "state": lambda: None}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.lmp"]


@pytest.mark.parametrize("cut", [0, 10, 1000, -50])
def test_truncated_checkpoint_is_refused_and_left_alone(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "run.lmp"
    save_checkpoint(path, components())
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    assert path.read_bytes() == before


def test_corrupted_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.lmp"
    save_checkpoint(path, components())
    data = bytearray(path.read_bytes())
    for i in range(100, len(data), 97):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_foreign_file_and_newer_format_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not an lmplay checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.lmp"
    torch.save({"format": "lmplay-checkpoint", "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)
    unversioned = tmp_path / "unversioned.lmp"
    torch.save({"format": "lmplay-checkpoint"}, unversioned)
    with pytest.raises(CheckpointError, match="no format version"):
        load_checkpoint(unversioned)
    text = tmp_path / "notes.lmp"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.lmp")


def test_component_shape_is_enforced(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state_args"):
        save_checkpoint(tmp_path / "x.lmp", {"model": {"state": {}}})
    assert not os.listdir(tmp_path)
