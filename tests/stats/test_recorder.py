from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from lmplay.stats import recorder
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import load_stats


def _recorder(path: Path) -> StatsRecorder:
    return StatsRecorder(path, run="r", exp="gpt2ish", model="r.lmp", meta={"batch_size": 4})


def _rec(i: int, **extra: object) -> dict:
    return {"samples": 4 * i, "tokens": 100 * i, "steps": i, "loss": 10.0 - i} | extra


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.stats.jsonl"
    rec = _recorder(path)
    rec.add_train(_rec(1, stage="s1", lr=np.float32(0.5), grad_norm=torch.tensor(2.0)))
    rec.add_validation("shakespeare", _rec(1, example={"prompt": "a", "truth": "b"}))
    rec.flush()
    stats = load_stats(path)
    assert (stats.run, stats.exp, stats.model) == ("r", "gpt2ish", "r.lmp")
    assert stats.meta == {"batch_size": 4}
    assert stats.train == [_rec(1, stage="s1", lr=0.5, grad_norm=2.0)]
    assert stats.validation == {"shakespeare": [_rec(1, example={"prompt": "a", "truth": "b"})]}
    assert rec.train == stats.train and rec.validation == stats.validation


def test_non_finite_loss_is_stored_as_null(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1) | {"loss": float("nan")})
    rec.flush()
    assert load_stats(rec.path).train[0]["loss"] is None


def test_record_without_required_keys_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokens"):
        _recorder(tmp_path / "r.stats.jsonl").add_train({"samples": 1, "loss": 2.0})


def test_records_are_copied_not_aliased(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    record = _rec(1)
    rec.add_train(record)
    record["loss"] = 99.0
    assert rec.train[0]["loss"] == 9.0


def test_flush_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "r.stats.jsonl"
    rec = _recorder(path)
    rec.flush()  # an empty history still writes a valid file
    assert load_stats(path).train == []
    for i in range(1, 4):
        rec.add_train(_rec(i))
        rec.flush()
    assert [p.name for p in tmp_path.iterdir()] == ["r.stats.jsonl"]
    assert len(load_stats(path).train) == 3


def test_failed_write_keeps_previous_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.stats.jsonl"
    rec = _recorder(path)
    rec.add_train(_rec(1))
    rec.flush()
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("lmplay.atomic.os.replace", crash)
    rec.reset()  # the next flush writes the whole file, through a temp file
    with pytest.raises(OSError, match="disk full"):
        rec.flush()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.stats.jsonl"]


def test_failed_append_is_cut_back_off_the_file(tmp_path, monkeypatch) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    rec.flush()
    before = rec.path.read_bytes()

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("lmplay.stats.recorder.os.fsync", crash)
    rec.add_train(_rec(2))
    with pytest.raises(OSError, match="disk full"):
        rec.flush()
    assert rec.path.read_bytes() == before
    monkeypatch.undo()
    rec.flush()  # the record is still pending and lands once the disk has room
    assert [r["steps"] for r in load_stats(rec.path).train] == [1, 2]


def test_a_flush_appends_only_what_was_added(tmp_path, monkeypatch) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    rec.flush()
    rewrites: list[int] = []
    real = recorder.atomic_write_bytes
    monkeypatch.setattr(
        recorder, "atomic_write_bytes", lambda p, data: rewrites.append(len(data)) or real(p, data)
    )
    for i in range(2, 50):
        before = rec.path.read_bytes()
        rec.add_train(_rec(i))
        rec.flush()
        after = rec.path.read_bytes()
        assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
    assert rewrites == []
    assert rec.path.read_bytes().splitlines()[0].startswith(b'{"format":"lmplay-stats"')


def test_resume_drops_records_written_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "r.stats.jsonl"
    rec = _recorder(path)
    for i in range(1, 6):
        rec.add_train(_rec(i))
    rec.add_validation("v", _rec(5))
    rec.flush()
    state = rec.state_dict()
    at_checkpoint = path.read_bytes()
    assert state == {
        "version": 2,
        "train_count": 5,
        "validation_counts": {"v": 1},
        "stop_count": 0,
        "generation_count": 0,
        "line_count": 6,
        "byte_size": len(at_checkpoint),
    }
    for i in range(6, 9):  # the interrupted run's tail, past the checkpoint
        rec.add_train(_rec(i))
    rec.add_validation("v", _rec(8))
    rec.add_validation("w", _rec(8))
    rec.flush()
    assert len(load_stats(path).train) == 8

    resumed = _recorder(path)
    resumed.load_state_dict(state)
    assert path.read_bytes() == at_checkpoint  # cut at exactly the checkpoint's records
    assert resumed.train == [_rec(i) for i in range(1, 6)]
    assert resumed.validation == {"v": [_rec(5)]}
    resumed.add_train(_rec(6, replayed=True))
    resumed.flush()
    train = load_stats(path).train
    assert [r["tokens"] for r in train] == [100, 200, 300, 400, 500, 600]
    assert train[-1]["replayed"] is True
    assert load_stats(path).validation == {"v": [_rec(5)]}


def test_state_dict_flushes_so_counts_match_the_file(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    assert rec.state_dict()["train_count"] == len(load_stats(rec.path).train) == 1


def test_resume_with_missing_file_warns_and_starts_empty(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    state = {"version": 1, "train_count": 3, "validation_counts": {"v": 1}}
    with pytest.warns(UserWarning, match="missing"):
        rec.load_state_dict(state)
    assert rec.train == [] and rec.validation == {}


def test_resume_with_short_file_warns_and_keeps_what_exists(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    rec.flush()
    size = rec.path.stat().st_size
    resumed = _recorder(rec.path)
    state = {"version": 2, "train_count": 4, "validation_counts": {}}
    with pytest.warns(UserWarning, match="train 1/4"):
        resumed.load_state_dict(state | {"line_count": 4, "byte_size": size * 3})
    assert resumed.train == [_rec(1)]
    resumed.flush()
    assert load_stats(rec.path).train == [_rec(1)]


def test_resume_keeps_lines_of_unknown_kinds_and_keys(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1, future_field={"x": 1}))
    rec.flush()
    foreign = {"kind": "profile", "record": {"phase": "data"}, "extra": [1]}
    with open(rec.path, "ab") as file:
        file.write(orjson.dumps(foreign) + b"\n")
    state = {"version": 2, "train_count": 1, "validation_counts": {}, "line_count": 2}
    resumed = _recorder(rec.path)
    resumed.load_state_dict(state | {"byte_size": rec.path.stat().st_size})
    resumed.add_train(_rec(2))
    resumed.flush()
    stats = load_stats(rec.path)
    assert stats.train == [_rec(1, future_field={"x": 1}), _rec(2)] and stats.other == [foreign]


def test_a_changed_header_is_rewritten_on_resume(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    state = rec.state_dict()
    renamed = StatsRecorder(rec.path, run="new-name", exp="gpt2ish", model="r.lmp", meta={})
    renamed.load_state_dict(state)
    renamed.flush()
    stats = load_stats(rec.path)
    assert stats.run == "new-name" and stats.train == [_rec(1)]


def test_a_version_1_history_moves_into_the_new_file(tmp_path: Path) -> None:
    old = tmp_path / "r.stats.json"
    doc = {"format": "lmplay-stats", "version": 1, "run": "r", "train": [_rec(1), _rec(2)]}
    old.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.load_state_dict({"version": 1, "train_count": 1, "validation_counts": {}})
    rec.add_train(_rec(2, replayed=True))
    rec.flush()
    assert load_stats(rec.path).train == [_rec(1), _rec(2, replayed=True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.stats.json.v1", "r.stats.jsonl"]


def test_a_torn_last_line_is_left_out_by_readers(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    rec.flush()
    with open(rec.path, "ab") as file:
        file.write(b'{"kind": "train", "rec')  # a write in progress
    assert load_stats(rec.path).train == [_rec(1)]


def test_resume_with_zero_counts_and_no_file_is_silent(tmp_path: Path, recwarn) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.load_state_dict({"version": 1, "train_count": 0, "validation_counts": {}})
    assert len(recwarn) == 0 and rec.train == []


def test_unknown_state_version_is_refused(tmp_path: Path) -> None:
    from lmplay.errors import UsageError

    with pytest.raises(UsageError, match="version"):
        _recorder(tmp_path / "r.stats.jsonl").load_state_dict(
            {"version": 3, "train_count": 0, "validation_counts": {}}
        )


def test_reset_drops_history(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "r.stats.jsonl")
    rec.add_train(_rec(1))
    rec.add_validation("v", _rec(1))
    rec.flush()
    rec.reset()
    rec.flush()
    stats = load_stats(rec.path)
    assert stats.train == [] and stats.validation == {}
    assert rec.state_dict()["train_count"] == 0


def _history(path: Path) -> StatsRecorder:
    """A run with records of every kind, flushed; its state as a checkpoint would hold it."""
    rec = _recorder(path)
    for i in range(1, 4):
        rec.add_train(_rec(i, stage="s"))
        rec.add_validation("v", _rec(i))
        rec.add_generation({"samples": i, "tokens": i, "steps": i, "prompt": "a", "text": "b"})
    rec.add_stop({"samples": 3, "tokens": 3, "steps": 3, "reason": "epochs", "stage": "s"})
    rec.add_train(_rec(4, stage="t"))
    return rec


def test_a_damaged_last_line_loses_only_that_line_on_resume(tmp_path: Path) -> None:
    rec = _history(tmp_path / "r.stats.jsonl")
    state = rec.state_dict()
    raw = rec.path.read_bytes()
    last_line_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    rec.path.write_bytes(raw[:last_line_start] + b'{"kind": "train", "rec\x00\x00\n')
    resumed = _recorder(rec.path)
    with pytest.warns(UserWarning, match="damaged line"):
        resumed.load_state_dict(state)
    # Every earlier record of every kind survives; only the damaged train record is gone.
    assert resumed.train == rec.train[:-1]
    assert resumed.validation == rec.validation
    assert resumed.stops == rec.stops and len(resumed.stops) == 1
    assert resumed.generations == rec.generations and len(resumed.generations) == 3
    resumed.flush()
    stats = load_stats(rec.path)
    assert (stats.stops, stats.generations) == (rec.stops, rec.generations)


def test_resume_keeps_the_counted_records_of_each_kind_past_a_damaged_line(tmp_path: Path) -> None:
    rec = _history(tmp_path / "r.stats.jsonl")
    state = rec.state_dict()
    lines = rec.path.read_bytes().split(b"\n")
    lines[1] = b"not json"  # the first train record, damaged: that record alone is lost
    later = orjson.dumps({"kind": "train", "record": _rec(9)})  # after the checkpoint
    rec.path.write_bytes(b"\n".join([*lines[:-1], later, b""]))
    resumed = _recorder(rec.path)
    with pytest.warns(UserWarning, match="damaged line"):
        resumed.load_state_dict(state)
    assert resumed.train == rec.train[1:]
    assert resumed.stops == rec.stops and resumed.generations == rec.generations
    assert resumed.validation == rec.validation
