"""StatsRecorder: collects a run's train and validation records and writes the stats file.

The file format is described in `lmplay.stats.runs`: a header line, then one line per record.
A flush appends the records added since the last one and fsyncs, so it costs what it adds, not
what the run holds. The recorder is Stateful: its state is the record counts and the byte size
of the file they fill, so a checkpoint stays small, and resuming truncates the file to exactly
those records (records written after the checkpoint belong to steps that will be replayed).

Trackers (`lmplay.stats.trackers`) get each record as it is added, never the records a resume
restores; their run ids travel in this component's state.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import orjson

from lmplay.atomic import atomic_write_bytes
from lmplay.errors import CheckpointError, UsageError
from lmplay.stats.runs import (
    EVENT_KEYS,
    LEGACY_SUFFIX,
    REQUIRED_KEYS,
    generation_line,
    header,
    load_stats,
    read_lines,
    read_lines_lenient,
    stop_line,
    train_line,
    validation_line,
)
from lmplay.stats.trackers import TrackedRun, Trackers, flat_hparams, line_step

STATE_VERSION = 2  # 1: counts only, for a version 1 (one JSON document) stats file
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class StatsRecorder:
    """Owns one run's records and writes them to `path`.

    A new recorder starts empty and replaces `path` on its first `flush()`; to continue an
    existing history, call `load_state_dict()` with the state saved in the checkpoint.
    """

    def __init__(
        self,
        path: Path,
        *,
        run: str,
        exp: str,
        model: str,
        meta: dict[str, Any],
        write: bool = True,
        trackers: Trackers | None = None,
    ) -> None:
        self.path = Path(path)
        self.write = write  # False on ranks other than 0: same records, no file
        self.run = run
        self.exp = exp
        self.model = model
        self.meta = _plain(meta)
        self._lines: list[dict[str, Any]] = []  # every record line, in file order
        self._train: list[dict[str, Any]] = []
        self._validation: dict[str, list[dict[str, Any]]] = {}
        self._stops: list[dict[str, Any]] = []
        self._generations: list[dict[str, Any]] = []
        self._written = 0  # lines of `_lines` in the file
        self._size = 0  # bytes of the file holding the header and those lines
        self._rewrite = True  # the file does not hold our header and `_lines[:_written]`
        self._migrated_from: Path | None = None  # a version 1 file to retire once rewritten
        # Copies of each record added, on the rank that writes the file; the file stays the truth.
        self.trackers = trackers if trackers is not None and write else Trackers([])

    @property
    def train(self) -> list[dict[str, Any]]:
        return list(self._train)

    @property
    def validation(self) -> dict[str, list[dict[str, Any]]]:
        return {name: list(records) for name, records in self._validation.items()}

    def add_train(self, record: dict[str, Any]) -> None:
        self._append(train_line(_checked(record)))

    def add_validation(self, name: str, record: dict[str, Any]) -> None:
        self._append(validation_line(name, _checked(record)))

    @property
    def stops(self) -> list[dict[str, Any]]:
        return list(self._stops)

    @property
    def generations(self) -> list[dict[str, Any]]:
        return list(self._generations)

    def add_stop(self, record: dict[str, Any]) -> bool:
        """Record why training stopped (`reason`, `message`, counters); False for a repeat.

        A rerun that stops again at once for the same reason (`--max-steps` already reached)
        adds nothing, so the list says what happened, not how often the command ran.
        """
        record = _checked(record, (*EVENT_KEYS, "reason"))
        last = self._stops[-1] if self._stops else None
        if last and (last["steps"], last["reason"]) == (record["steps"], record["reason"]):
            return False
        self._append(stop_line(record))
        return True

    def add_generation(self, record: dict[str, Any]) -> None:
        self._append(generation_line(_checked(record, (*EVENT_KEYS, "prompt", "text"))))

    def reset(self) -> None:
        """Drop every record (`--reset-history`); the next flush writes an empty history."""
        self._set_lines([])
        self._rewrite = True
        self.trackers.load_state_dict({})  # a new history is a new tracker run

    def flush(self) -> None:
        """Append the records added since the last flush, then fsync.

        The first flush (and the first after `reset` or a resume that could not reuse the file)
        writes the whole file instead: temp file, fsync, `os.replace`, so a crash leaves the
        previous file intact. An append that fails (disk full) is cut back off the file.
        """
        if not self.write:  # another rank writes the file
            return
        self.trackers.flush()
        if self._rewrite:
            data = _encode(self._header()) + b"".join(_encode(line) for line in self._lines)
            atomic_write_bytes(self.path, data)
            self._written, self._size, self._rewrite = len(self._lines), len(data), False
            self._retire_legacy_file()
            return
        if self._written == len(self._lines):
            return
        if not self.path.exists():  # removed under the run: write it whole again
            self._rewrite = True
            self.flush()
            return
        data = b"".join(_encode(line) for line in self._lines[self._written :])
        with open(self.path, "r+b") as file:
            file.seek(self._size)
            try:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            except OSError:
                file.truncate(self._size)
                raise
        self._written, self._size = len(self._lines), self._size + len(data)

    def state_dict(self) -> dict[str, Any]:
        """Record counts and the file size they fill; flushes first, so they match the file."""
        self.flush()
        state = {
            "version": STATE_VERSION,
            "train_count": len(self._train),
            "validation_counts": {name: len(recs) for name, recs in self._validation.items()},
            "stop_count": len(self._stops),
            "generation_count": len(self._generations),
            "line_count": len(self._lines),
            "byte_size": self._size,
        }
        if self.trackers.run_ids:  # W&B and MLflow runs that a resume goes on with
            state["trackers"] = self.trackers.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: keep exactly the records the checkpoint counted, truncating the file there.

        Records past them were written after the checkpoint by the interrupted run; the resumed
        run replays those steps, so keeping them would duplicate them.
        """
        version = state.get("version")
        if version not in (1, STATE_VERSION):
            raise CheckpointError(
                f"stats state version {version!r} is not one this lmplay reads ({STATE_VERSION})"
            )
        train_count = int(state["train_count"])
        val_counts = {str(k): int(v) for k, v in state["validation_counts"].items()}
        self.trackers.load_state_dict(state.get("trackers", {}))
        if version == STATE_VERSION and self._reuse_file(state):
            return
        self._rewrite = True
        source = self._legacy_file() if version == 1 else self.path
        if source is None or not source.exists():
            self._set_lines([])
            if train_count or any(val_counts.values()):
                warnings.warn(
                    f"{self.path}: stats file is missing; the checkpoint expected "
                    f"{train_count} train records, so the resumed history starts empty",
                    stacklevel=2,
                )
            return
        if version == 1:
            self._keep_counted(_lines_of(load_stats(source)), state)
            self._migrated_from = source if source != self.path else None
            return
        self._keep_counted(self._readable_lines(source, state.get("line_count")), state)

    def _reuse_file(self, state: dict[str, Any]) -> bool:
        """Whether the file's first `byte_size` bytes hold our header and `line_count` lines;
        if so they become the history and the file is cut there (nothing else is rewritten)."""
        line_count, size = int(state["line_count"]), int(state["byte_size"])
        try:
            with open(self.path, "rb") as file:
                prefix = file.read(size)
        except OSError:
            return False
        if len(prefix) != size or not prefix.endswith(b"\n"):
            return False
        try:
            head, lines = read_lines(self.path, prefix)
        except UsageError:
            return False
        if len(lines) != line_count:
            return False
        self._set_lines(lines)
        if head != self._header():  # e.g. a new --run-name: write the header anew, once
            self._rewrite = True
            return True
        if self.write:
            os.truncate(self.path, size)
        self._written, self._size, self._rewrite = line_count, size, False
        return True

    def _readable_lines(self, source: Path, line_count: int | None) -> list[dict[str, Any]]:
        """The record lines among the first `line_count` of `source` (all when None), damaged
        ones skipped with one warning."""
        try:
            _, numbered, damaged = read_lines_lenient(source, source.read_bytes())
        except (OSError, UsageError) as error:
            warnings.warn(f"{source}: unreadable ({error}); the history starts empty", stacklevel=3)
            return []
        last = math.inf if line_count is None else line_count + 1  # line 1 is the header
        damaged = [number for number, _ in damaged if number <= last]
        if damaged:
            warnings.warn(
                f"{source}: damaged line(s) {', '.join(map(str, damaged))} left out; every other "
                "record is kept",
                stacklevel=3,
            )
        return [line for number, line in numbered if number <= last]

    def _keep_counted(self, lines: list[dict[str, Any]], state: dict[str, Any]) -> None:
        """Of `lines`, in file order, the first records of each kind the checkpoint counted
        (stop, generation and unknown kinds: all, where the checkpoint did not count them)."""
        wanted: dict[tuple[str, str | None], int] = {("train", None): int(state["train_count"])}
        for name, count in state["validation_counts"].items():
            wanted["validation", str(name)] = int(count)
        for kind in ("stop", "generation"):
            if f"{kind}_count" in state:
                wanted[kind, None] = int(state[f"{kind}_count"])
        kept_counts: dict[tuple[str, str | None], int] = {}
        kept = []
        for line in lines:
            key = (line["kind"], line.get("set") if line["kind"] == "validation" else None)
            limit = wanted.get(key, 0 if key[0] in ("train", "validation") else math.inf)
            if kept_counts.get(key, 0) < limit:
                kept_counts[key] = kept_counts.get(key, 0) + 1
                kept.append(line)
        self._set_lines(kept)
        short = [
            f"{kind if name is None else f'{kind}[{name}]'} {kept_counts.get((kind, name), 0)}/{n}"
            for (kind, name), n in wanted.items()
            if kept_counts.get((kind, name), 0) < n
        ]
        if short:
            warnings.warn(
                f"{self.path}: fewer records than the checkpoint expected ({', '.join(short)}); "
                "resuming with what the file holds",
                stacklevel=3,
            )

    def close(self, exit_code: int) -> None:
        """End the trackers' runs (the stats file needs no closing)."""
        self.trackers.close(exit_code)

    def _append(self, line: dict[str, Any], track: bool = True) -> None:
        self._lines.append(line)
        self._index(line)
        if track and self.trackers.sinks:
            if not self.trackers.started:
                self.trackers.start(self._tracked_run())
            self.trackers.log(line)

    def _tracked_run(self) -> TrackedRun:
        # The records restored from the checkpoint were logged by the run that added them.
        restored = self._lines[:-1]
        last = max((line_step(line) for line in restored), default=-1)
        return TrackedRun(self.run, flat_hparams(self.meta), first_step=last + 1)

    def _set_lines(self, lines: list[dict[str, Any]]) -> None:
        self._lines, self._train, self._validation = [], [], {}
        self._stops, self._generations = [], []
        self._written = self._size = 0
        for line in lines:
            self._append(line, track=False)

    def _index(self, line: dict[str, Any]) -> None:
        if line["kind"] == "train":
            self._train.append(line["record"])
        elif line["kind"] == "validation":
            self._validation.setdefault(line["set"], []).append(line["record"])
        elif line["kind"] == "stop":
            self._stops.append(line["record"])
        elif line["kind"] == "generation":
            self._generations.append(line["record"])

    def _header(self) -> dict[str, Any]:
        return header(self.run, self.exp, self.model, self.meta)

    def _legacy_file(self) -> Path | None:
        """Where a version 1 checkpoint's stats are: `<stem>.stats.json` beside `path`."""
        if self.path.name.endswith(LEGACY_SUFFIX):
            return self.path
        return self.path.with_suffix(".json")

    def _retire_legacy_file(self) -> None:
        # Its records now live in the new file; kept under a name plots do not pick up twice.
        if self._migrated_from is not None and self._migrated_from.exists():
            self._migrated_from.replace(
                self._migrated_from.with_name(self._migrated_from.name + ".v1")
            )
        self._migrated_from = None


def _encode(line: dict[str, Any]) -> bytes:
    return orjson.dumps(line, option=_DUMP_OPTIONS) + b"\n"


def _checked(record: dict[str, Any], required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    # Missing counters are a trainer bug: fail at the call site, not later in the plotter.
    missing = [key for key in required if key not in record]
    if missing:
        raise ValueError(f"stats record lacks {missing}: {record!r}")
    return _plain(record)


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    # A JSON round trip detaches tensors (no GPU memory kept alive by the history) and turns a
    # value orjson cannot write into an error here rather than at the next flush.
    return orjson.loads(orjson.dumps(value, default=_to_json, option=_DUMP_OPTIONS))


def _to_json(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()  # torch and numpy scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"cannot store {type(value).__name__} in a stats file")


def _lines_of(stats: Any) -> list[dict[str, Any]]:
    """A format 1 file's records as lines (it has no stop or generation records)."""
    lines = [train_line(record) for record in stats.train]
    return lines + [
        validation_line(name, record)
        for name, records in stats.validation.items()
        for record in records
    ]
