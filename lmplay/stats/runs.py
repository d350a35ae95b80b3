"""The stats file format, and loading it back (shared by the recorder and the plotter).

One JSON Lines file per run, UTF-8, written by `StatsRecorder` with orjson. By convention the
trainer writes it to `<out_dir>/<model_stem>.stats.jsonl`; `lmp_plotstats` globs `*.stats.jsonl`
and the `*.stats.json` files of lmplay before version 2 of the format. The first line is the
header, each further line one record, appended as the run goes (a flush costs what it adds)::

    {"format": "lmplay-stats", "version": 2, "run": "gpt2ish", "exp": "gpt2ish",
     "model": "gpt2ish.lmp", "meta": {"plan": "tiny", "batch_size": 16, "...": "free-form"}}
    {"kind": "train", "record": {"samples": 64, "tokens": 12345, "steps": 4,
     "stage": "shakespeare", "loss": 9.1, "accuracy": 0.05, "lr": 0.0006, "context_len": 256,
     "batch_size": 16, "source_tokens": {"shakespeare": 11800}, "grad_norm": 1.2,
     "tokens_per_s": 5000.0, "padding_ratio": 0.06, "truncation_ratio": 0.0}}
    {"kind": "validation", "set": "shakespeare", "record": {"samples": 64, "tokens": 12345,
     "steps": 4, "loss": 8.9, "perplexity": 7331.0, "accuracy": 0.06, "word_accuracy": 0.01,
     "example": {"prompt": "...", "truth": "...", "prediction": "..."}}}

    {"kind": "stop", "record": {"samples": 640, "tokens": 76934, "steps": 40,
     "stage": "shakespeare", "reason": "loss_target", "message": "mean train loss ... <= 6.5"}}
    {"kind": "generation", "record": {"samples": 512, "tokens": 61234, "steps": 32,
     "prompt": "The", "text": " king is ...", "temperature": 0.8, "top_k": 50, "seed": 7}}

(one line each here wrapped for reading).

- `format` is always `"lmplay-stats"`; `version` is 2 (1: the whole run as one JSON document
  `{..header.., "train": [records], "validation": {set: [records]}}`, still read). A reader
  refuses a newer version.
- `run` names the run in plot legends; `exp` is the `--exp` model family; `model` the
  checkpoint file name. `meta` holds free-form run settings.
- Train records and the records of each validation set are in the order they were written.
  A line of a kind this lmplay does not know is kept (`RunStats.other`), not refused.
- Every record is an object with at least `samples`, `tokens` (counters since the start of the
  run, so they grow from record to record) and `loss` (a number, or `null` when it was not
  finite). All other keys are optional, and readers keep keys they do not know.
- A train record's `context_len` and `batch_size` are its stage's; `source_tokens` counts the
  target tokens trained from each dataset since the run began, and a mixed stage's records
  `source_passes`, the passes over each of its datasets completed (`docs/plans.md`).
- `stop` lines say why training stopped, one each time it did: a stage that ended (`reason`
  `epochs` when its data ran out, `tokens` or `steps` at its budget, `ran_out` when a dataset of
  a mixture without repeat ran out, or the stop rule that ended it: `loss_target`,
  `early_stop`, `max_epochs`) or a run that paused (`max_steps`, `interrupted`, `diverged`);
  `RunStats.stop_reason` is the last one. `generation` lines hold the samples of
  `--generate-every`, one per prompt. Neither carries `loss`; both carry `samples`, `tokens` and
  `steps`.
- A last line without its newline is a write in progress (or cut short by a crash) and is
  left out. The resumed run keeps, of each kind, the records its checkpoint counted (a damaged
  line loses only its own record, with a warning) and rewrites the file with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lmplay.compat import read_stats_v1
from lmplay.errors import UsageError
from lmplay.run_files import LEGACY_STATS_SUFFIX, stats_of
from lmplay.run_files import STATS_SUFFIX as RUN_STATS_SUFFIX

FORMAT = "lmplay-stats"
VERSION = 2
STATS_SUFFIX = RUN_STATS_SUFFIX
LEGACY_SUFFIX = LEGACY_STATS_SUFFIX  # format version 1: one JSON document
STATS_SUFFIXES = (STATS_SUFFIX, LEGACY_SUFFIX)
REQUIRED_KEYS = ("samples", "tokens", "loss")
EVENT_KEYS = ("samples", "tokens", "steps")  # what every stop and generation record carries
_EVENT_TEXTS = {"stop": ("reason",), "generation": ("prompt", "text")}


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
    other: list[dict[str, Any]] = field(default_factory=list)  # lines of unknown kinds, as read

    @property
    def stop_reason(self) -> str | None:
        """Why training last stopped (`loss_target`, `max_steps`, ...), None when never."""
        return self.stops[-1]["reason"] if self.stops else None

    @property
    def tokens(self) -> int:
        """The most tokens any record of the run reached (0 for an empty run)."""
        records = [*self.train, *(r for recs in self.validation.values() for r in recs)]
        return max((int(r["tokens"]) for r in records), default=0)

    def header(self) -> dict[str, Any]:
        return header(self.run, self.exp, self.model, self.meta)


def header(run: str, exp: str, model: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The first line of a stats file."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": run,
        "exp": exp,
        "model": model,
        "meta": meta,
    }


def train_line(record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "train", "record": record}


def validation_line(name: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "validation", "set": name, "record": record}


def stop_line(record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "stop", "record": record}


def generation_line(record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "generation", "record": record}


def load_stats(path: Path) -> RunStats:
    """Read and check one stats file; any problem raises `UsageError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read stats file: {e.strerror or e}") from e
    first = _json_lines_header(raw)
    if first is None:
        return _load_document(path, raw)
    head, lines = read_lines(path, raw)
    return stats_from_lines(path, head, lines)


def read_lines(path: Path, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the record lines of a JSON Lines stats file's bytes, checked.

    An unterminated last line (a write in progress, or cut short) is left out; any other line
    that is not a valid record is an error.
    """
    head, numbered, damaged = read_lines_lenient(path, raw)
    if damaged:
        raise damaged[0][1]
    return head, [line for _, line in numbered]


def read_lines_lenient(
    path: Path, raw: bytes
) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], list[tuple[int, UsageError]]]:
    """Like `read_lines`, but a damaged line is skipped and reported, not raised: the header,
    `(line number, line)` of each valid record line, and `(line number, why)` of each damaged
    one (the header is line 1)."""
    head = _json_lines_header(raw)
    if head is None:
        raise UsageError(f"{path}: not an lmplay stats file (no JSON Lines header)")
    _check_header(head, path)
    body = raw.split(b"\n")[1:-1]  # [-1]: empty after the last newline, or an unfinished line
    lines: list[tuple[int, dict[str, Any]]] = []
    damaged: list[tuple[int, UsageError]] = []
    for number, text in enumerate(body, start=2):
        if not text.strip():
            continue
        try:
            lines.append((number, _parse_line(path, number, text)))
        except UsageError as error:
            damaged.append((number, error))
    return head, lines, damaged


def _parse_line(path: Path, number: int, text: bytes) -> dict[str, Any]:
    try:
        line = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise UsageError(f"{path}: line {number} is not valid JSON: {e}") from e
    if not isinstance(line, dict) or not isinstance(line.get("kind"), str):
        raise UsageError(f'{path}: line {number} is not an object with a "kind"')
    if line["kind"] in ("train", "validation"):
        _records([line.get("record")], f"line {number}", path)
        if line["kind"] == "validation" and not isinstance(line.get("set"), str):
            raise UsageError(f'{path}: line {number}: a validation line needs a "set" name')
    elif line["kind"] in _EVENT_TEXTS:
        _event(line.get("record"), _EVENT_TEXTS[line["kind"]], f"line {number}", path)
    return line


def stats_from_lines(path: Path, head: dict[str, Any], lines: list[dict[str, Any]]) -> RunStats:
    stats = _stats_from_header(path, head)
    for line in lines:
        if line["kind"] == "train":
            stats.train.append(line["record"])
        elif line["kind"] == "validation":
            stats.validation.setdefault(line["set"], []).append(line["record"])
        elif line["kind"] == "stop":
            stats.stops.append(line["record"])
        elif line["kind"] == "generation":
            stats.generations.append(line["record"])
        else:
            stats.other.append(line)
    return stats


def _json_lines_header(raw: bytes) -> dict[str, Any] | None:
    """The first line when it is a version-2+ header, else None (a version 1 document)."""
    first = raw.split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, int) or version < 2 or "train" in doc or "validation" in doc:
        return None
    return doc


def _check_header(doc: Any, path: Path) -> int:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f'{path}: not an lmplay stats file (no "format": "{FORMAT}")')
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsageError(f"{path}: bad stats version {version!r}")
    if version > VERSION:
        raise UsageError(
            f"{path}: stats format version {version} is newer than this lmplay reads ({VERSION})"
        )
    return version


def _stats_from_header(path: Path, doc: dict[str, Any]) -> RunStats:
    stem = path.name.removesuffix(STATS_SUFFIX).removesuffix(LEGACY_SUFFIX)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise UsageError(f'{path}: "meta" must be an object')
    return RunStats(
        path=path,
        run=_text(doc, "run", stem, path),
        exp=_text(doc, "exp", "", path),
        model=_text(doc, "model", "", path),
        meta=meta,
        version=doc["version"],
    )


def _load_document(path: Path, raw: bytes) -> RunStats:
    """Format version 1: the whole run as one JSON document (`lmplay.compat.read_stats_v1`)."""
    doc = read_stats_v1(path, raw)
    _check_header(doc, path)
    stats = _stats_from_header(path, doc)
    stats.train = _records(doc.get("train", []), "train", path)
    stats.validation = _validation(doc.get("validation", {}), path)
    return stats


def find_stats_files(locations: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Files named directly (a checkpoint `X.lmp` names its stats `X.stats.jsonl`), plus
    `*.stats.jsonl` and `*.stats.json` found recursively under folders.

    Returns `(files, missing)`: the files in a stable order without duplicates, and the
    locations that do not exist.
    """
    files: list[Path] = []
    missing: list[Path] = []
    for location in map(Path, locations):
        named = stats_of(location)  # a checkpoint stands for its run's stats
        if named.is_dir():
            found = (p for suffix in STATS_SUFFIXES for p in named.rglob(f"*{suffix}"))
            files.extend(sorted(p for p in found if p.is_file()))
        elif named.exists():
            files.append(named)
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


def _event(record: Any, texts: tuple[str, ...], where: str, path: Path) -> None:
    """A record without a loss: counters and the named text fields."""
    if not isinstance(record, dict):
        raise UsageError(f"{path}: {where}: the record is not an object")
    for key in EVENT_KEYS:
        number = record.get(key)
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise UsageError(f"{path}: {where} needs a number for {key!r}")
    for key in texts:
        if not isinstance(record.get(key), str):
            raise UsageError(f"{path}: {where} needs a text for {key!r}")
