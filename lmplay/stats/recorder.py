"""StatsRecorder: collects a run's train and validation records and writes the stats file.

The file format is described in `lmplay.stats.runs`. The recorder is Stateful: its state is only
the record counts, so a checkpoint stays small, and resuming truncates the file's records to
those counts (records written after the checkpoint belong to steps that will be replayed).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import orjson

from lmplay.atomic import atomic_write_bytes
from lmplay.errors import CheckpointError
from lmplay.stats.runs import REQUIRED_KEYS, RunStats, load_stats

STATE_VERSION = 1
_DUMP_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class StatsRecorder:
    """Owns one run's records and writes them atomically to `path`.

    A new recorder starts empty and overwrites `path` on its first `flush()`; to continue an
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
    ) -> None:
        self.path = Path(path)
        self.write = write  # False on ranks other than 0: same records, no file
        self.run = run
        self.exp = exp
        self.model = model
        self.meta = _plain(meta)
        self._train: list[dict[str, Any]] = []
        self._validation: dict[str, list[dict[str, Any]]] = {}
        self._dirty = True  # the first flush writes the file even when there is nothing yet

    @property
    def train(self) -> list[dict[str, Any]]:
        return list(self._train)

    @property
    def validation(self) -> dict[str, list[dict[str, Any]]]:
        return {name: list(records) for name, records in self._validation.items()}

    def add_train(self, record: dict[str, Any]) -> None:
        self._train.append(_checked(record))
        self._dirty = True

    def add_validation(self, name: str, record: dict[str, Any]) -> None:
        self._validation.setdefault(name, []).append(_checked(record))
        self._dirty = True

    def reset(self) -> None:
        """Drop every record (`--reset-history`); the next flush writes an empty history."""
        self._train.clear()
        self._validation.clear()
        self._dirty = True

    def flush(self) -> None:
        """Write the whole file: temp file in the same folder, fsync, then `os.replace`.

        Readers (a plot running alongside training) never see a half-written file, and a
        crash leaves the previous file intact. Does nothing when no record changed.
        """
        if not self._dirty or not self.write:
            return
        stats = RunStats(
            path=self.path,
            run=self.run,
            exp=self.exp,
            model=self.model,
            meta=self.meta,
            train=self._train,
            validation=self._validation,
        )
        atomic_write_bytes(self.path, orjson.dumps(stats.to_json(), option=_DUMP_OPTIONS))
        self._dirty = False

    def state_dict(self) -> dict[str, Any]:
        """Record counts; flushes first if needed, so the counts always match the file."""
        self.flush()
        return {
            "version": STATE_VERSION,
            "train_count": len(self._train),
            "validation_counts": {name: len(recs) for name, recs in self._validation.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: keep exactly the first `train_count` / `validation_counts` records of the file.

        Records past those counts were written after the checkpoint by the interrupted run;
        the resumed run replays those steps, so keeping them would duplicate them.
        """
        version = state.get("version")
        if version != STATE_VERSION:
            raise CheckpointError(
                f"stats state version {version!r} is not one this lmplay reads ({STATE_VERSION})"
            )
        train_count = int(state["train_count"])
        val_counts = {str(k): int(v) for k, v in state["validation_counts"].items()}
        self._dirty = True
        if not self.path.exists():
            self._train, self._validation = [], {}
            if train_count or any(val_counts.values()):
                warnings.warn(
                    f"{self.path}: stats file is missing; the checkpoint expected "
                    f"{train_count} train records, so the resumed history starts empty",
                    stacklevel=2,
                )
            return
        stats = load_stats(self.path)
        self._train = stats.train[:train_count]
        self._validation = {
            name: stats.validation.get(name, [])[:count] for name, count in val_counts.items()
        }
        kept = {"train": len(self._train)} | {
            f"validation[{name}]": len(recs) for name, recs in self._validation.items()
        }
        wanted = {"train": train_count} | {f"validation[{n}]": c for n, c in val_counts.items()}
        short = [f"{key} {kept[key]}/{count}" for key, count in wanted.items() if kept[key] < count]
        if short:
            warnings.warn(
                f"{self.path}: fewer records than the checkpoint expected ({', '.join(short)}); "
                "resuming with what the file holds",
                stacklevel=2,
            )


def _checked(record: dict[str, Any]) -> dict[str, Any]:
    # Missing counters are a trainer bug: fail at the call site, not later in the plotter.
    missing = [key for key in REQUIRED_KEYS if key not in record]
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
