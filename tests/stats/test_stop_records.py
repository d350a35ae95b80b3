"""Stop and generation records in the stats file: written, resumed, and read back."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lmplay.errors import UsageError
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import FORMAT, load_stats


def recorder(path: Path) -> StatsRecorder:
    return StatsRecorder(path, run="r", exp="gpt2ish", model="r.lmp", meta={})


def counters(step: int) -> dict[str, int]:
    return {"samples": 4 * step, "tokens": 100 * step, "steps": step}


def test_stops_and_generations_are_written_resumed_and_not_repeated(tmp_path: Path) -> None:
    path = tmp_path / "r.stats.jsonl"
    rec = recorder(path)
    assert rec.add_stop(counters(3) | {"stage": "s", "reason": "max_steps", "message": "m"})
    assert not rec.add_stop(counters(3) | {"stage": "s", "reason": "max_steps", "message": "m"})
    rec.add_generation(counters(2) | {"prompt": "The", "text": " king"})
    state = rec.state_dict()
    rec.add_stop(counters(5) | {"stage": "s", "reason": "loss_target", "message": "m"})
    rec.add_generation(counters(4) | {"prompt": "The", "text": " queen"})
    rec.flush()
    stats = load_stats(path)
    assert stats.stop_reason == "loss_target" and len(stats.generations) == 2
    kinds = [orjson.loads(line)["kind"] for line in path.read_bytes().splitlines()[1:]]
    assert kinds == ["stop", "generation", "stop", "generation"]

    resumed = recorder(path)
    resumed.load_state_dict(state)  # the checkpoint saved before the last two records
    assert [s["reason"] for s in resumed.stops] == ["max_steps"]
    assert [g["text"] for g in resumed.generations] == [" king"]


def test_files_and_checkpoints_from_before_stop_records_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.stats.json"
    doc = {"format": FORMAT, "version": 1, "run": "old", "train": [], "validation": {}}
    path.write_bytes(orjson.dumps(doc))
    stats = load_stats(path)
    assert stats.stops == [] and stats.generations == [] and stats.stop_reason is None
    rec = recorder(path)
    rec.load_state_dict({"version": 1, "train_count": 0, "validation_counts": {}})
    assert rec.stops == []


def test_a_stop_record_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.stats.jsonl"
    header = {"format": FORMAT, "version": 2, "run": "bad"}
    stop = {"kind": "stop", "record": counters(1)}
    path.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(stop) + b"\n")
    with pytest.raises(UsageError, match="line 2 needs a text for 'reason'"):
        load_stats(path)
    with pytest.raises(ValueError, match="lacks"):
        recorder(tmp_path / "r.stats.jsonl").add_stop(counters(1))
