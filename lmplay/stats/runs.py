"""The stats file format, and loading it back (shared by the recorder and the plotter).

One JSON file per run, UTF-8, written by `StatsRecorder` with orjson. By convention the trainer
writes it to `<out_dir>/<model_stem>.stats.json`, so `lmp_plotstats` globs `*.stats.json`::

    {"format": "lmplay-stats", "version": 1,
     "run": "gpt2ish", "exp": "gpt2ish", "model": "gpt2ish.lmp",
     "meta": {"plan": "tiny", "batch_size": 16, "...": "free-form run settings"},
     "train": [{"samples": 64, "tokens": 12345, "steps": 4, "stage": "shakespeare",
                "loss": 9.1, "accuracy": 0.05, "lr": 0.0006, "grad_norm": 1.2,
                "tokens_per_s": 5000.0, "padding_ratio": 0.06, "truncation_ratio": 0.0}, ...],
     "validation": {"shakespeare": [{"samples": 64, "tokens": 12345, "steps": 4,
                                     "loss": 8.9, "perplexity": 7331.0, "accuracy": 0.06,
                                     "word_accuracy": 0.01,
                                     "example": {"prompt": "...", "truth": "...",
                                                 "prediction": "..."}}, ...]},
     "stops": [{"samples": 640, "tokens": 76934, "steps": 40, "stage": "shakespeare",
                "reason": "loss_target", "message": "mean train loss ... <= 6.5"}],
     "stop_reason": "loss_target",
     "generations": [{"samples": 512, "tokens": 61234, "steps": 32, "prompt": "The",
                      "text": " king is ...", "temperature": 0.8, "top_k": 50, "seed": 7}]}

- `format` is always `"lmplay-stats"`; `version` is 1. A reader refuses a newer version.
- `run` names the run in plot legends; `exp` is the `--exp` model family; `model` the
  checkpoint file name. `meta` holds free-form run settings.
- `train` lists one record per logged training interval, in the order they were written.
- `validation` maps each validation set name to its records, in the order they were written.
- Every record is an object with at least `samples`, `tokens` (counters since the start of the
  run, so they grow from record to record) and `loss` (a number, or `null` when it was not
  finite). All other keys are optional, and readers keep keys they do not know.
- `stops` (optional, added after version 1 first shipped; absent means none) lists why
  training stopped, one record each time it did: a stage that ended (`reason` `epochs` when its
  data ran out, or the stop rule that ended it: `loss_target`, `early_stop`, `max_epochs`) or a
  run that paused (`max_steps`, `interrupted`, `diverged`). `stop_reason` repeats the last
  reason (null when there is none) for readers that want only that.
- `generations` (optional) holds the samples of `--generate-every`, one record per prompt.
  Neither list carries `loss`; both carry `samples`, `tokens` and `steps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lmplay.errors import UsageError

FORMAT = "lmplay-stats"
VERSION = 1
STATS_SUFFIX = ".stats.json"
REQUIRED_KEYS = ("samples", "tokens", "loss")
EVENT_KEYS = ("samples", "tokens", "steps")  # what every stop and generation record carries


@dataclass
class RunStats:
    """The content of one stats file."""

    path: Path
    run: str
    exp: str = ""
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    train: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    version: int = VERSION
    stops: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stop_reason(self) -> str | None:
        """Why training last stopped (`loss_target`, `max_steps`, ...), None when never."""
        return self.stops[-1]["reason"] if self.stops else None

    @property
    def tokens(self) -> int:
        """The most tokens any record of the run reached (0 for an empty run)."""
        records = [*self.train, *(r for recs in self.validation.values() for r in recs)]
        return max((int(r["tokens"]) for r in records), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "run": self.run,
            "exp": self.exp,
            "model": self.model,
            "meta": self.meta,
            "train": self.train,
            "validation": self.validation,
            "stops": self.stops,
            "stop_reason": self.stop_reason,
            "generations": self.generations,
        }


def load_stats(path: Path) -> RunStats:
    """Read and check one stats file; any problem raises `UsageError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read stats file: {e.strerror or e}") from e
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON (truncated or corrupted?): {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f'{path}: not an lmplay stats file (no "format": "{FORMAT}")')
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsageError(f"{path}: bad stats version {version!r}")
    if version > VERSION:
        raise UsageError(
            f"{path}: stats format version {version} is newer than this lmplay reads ({VERSION})"
        )
    stem = path.name.removesuffix(STATS_SUFFIX)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise UsageError(f'{path}: "meta" must be an object')
    return RunStats(
        path=path,
        run=_text(doc, "run", stem, path),
        exp=_text(doc, "exp", "", path),
        model=_text(doc, "model", "", path),
        meta=meta,
        train=_records(doc.get("train", []), "train", path),
        validation=_validation(doc.get("validation", {}), path),
        version=version,
        stops=_events(doc.get("stops", []), "stops", ("reason",), path),
        generations=_events(doc.get("generations", []), "generations", ("prompt", "text"), path),
    )


def find_stats_files(locations: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Files named directly, plus `*.stats.json` found recursively under folders.

    Returns `(files, missing)`: the files in a stable order without duplicates, and the
    locations that do not exist.
    """
    files: list[Path] = []
    missing: list[Path] = []
    for location in map(Path, locations):
        if location.is_dir():
            files.extend(sorted(p for p in location.rglob(f"*{STATS_SUFFIX}") if p.is_file()))
        elif location.exists():
            files.append(location)
        else:
            missing.append(location)
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in files:
        if path.resolve() not in seen:  # a file reached through two locations is one run
            seen.add(path.resolve())
            unique.append(path)
    return unique, missing


def _text(doc: dict[str, Any], key: str, default: str, path: Path) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f'{path}: "{key}" must be a string, got {value!r}')
    return value


def _validation(value: Any, path: Path) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(value, dict):
        raise UsageError(f'{path}: "validation" must map set names to lists of records')
    return {name: _records(recs, f"validation[{name}]", path) for name, recs in value.items()}


def _events(value: Any, where: str, texts: tuple[str, ...], path: Path) -> list[dict[str, Any]]:
    """Records without a loss: counters and the named text fields."""
    if not isinstance(value, list):
        raise UsageError(f"{path}: {where} must be a list of records")
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise UsageError(f"{path}: {where} record {i} is not an object")
        for key in EVENT_KEYS:
            number = record.get(key)
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                raise UsageError(f"{path}: {where} record {i} needs a number for {key!r}")
        for key in texts:
            if not isinstance(record.get(key), str):
                raise UsageError(f"{path}: {where} record {i} needs a text for {key!r}")
    return value


def _records(value: Any, where: str, path: Path) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise UsageError(f"{path}: {where} must be a list of records")
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise UsageError(f"{path}: {where} record {i} is not an object")
        for key in REQUIRED_KEYS:
            number = record.get(key)
            if key == "loss" and number is None and key in record:
                continue  # a non-finite loss is stored as null and plotted as a gap
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                raise UsageError(f"{path}: {where} record {i} needs a number for {key!r}")
    return value
