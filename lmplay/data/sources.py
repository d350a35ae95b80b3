"""Load a plan's dataset (hub, local files or the bundled corpus) as rows of prompt/truth text.

Every source ends up as a `datasets.Dataset` with exactly two string columns: `prompt` (never
trained on; "" for plain text) and `truth`. Local files and the bundled corpus go through
`datasets.load_dataset` too, so their rows are cached as Arrow files like hub data.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import glob
import gzip
import hashlib
import json
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import datasets
import huggingface_hub.constants

from lmplay.errors import HubUnavailableError, UsageError

logger = logging.getLogger(__name__)

FORMATS = ("text", "json", "jsonl", "parquet", "arrow", "disk")
BUNDLED = {"shakespeare": "shakespeare.jsonl.gz"}
# Longest suffixes first so ".jsonl.gz" wins over ".gz".
_EXTENSION_FORMATS = {
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".txt.gz": "text",
    ".parquet": "parquet",
    ".jsonl": "json",
    ".arrow": "arrow",
    ".json": "json",
    ".txt": "text",
}
# Files that `save_to_disk` writes; their presence marks a folder as a saved dataset.
_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_PROBE_TIMEOUT_S = 2.0
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class SourceSpec:
    """One dataset of a plan. Exactly one of `hub`, `files` and `bundled` is set."""

    name: str
    """Plan-local name, used in messages and as the validation-set name."""
    hub: str | None = None
    """Hugging Face hub id, e.g. "wikimedia/wikipedia"."""
    config: str | None = None
    """Hub config, e.g. "20231101.en"."""
    files: tuple[str, ...] = ()
    """Local files (globs allowed) or one `save_to_disk` folder; relative to `base_dir`."""
    format: str | None = None
    """One of FORMATS; inferred from the file extensions when None. A text file is one row."""
    bundled: str | None = None
    """Name of a corpus shipped in the package ("shakespeare")."""
    split: str = "train"
    text_column: str = "text"
    title_column: str | None = None
    """When set, truth = title + "\\n\\n" + text (Wikipedia)."""
    prompt_column: str | None = None
    """With `truth_column`: prompt/truth pairs (instruction data); `text_column` is unused."""
    truth_column: str | None = None
    train_prompt: bool = False
    """Train on the prompt tokens too."""
    base_dir: str = "."

    def __post_init__(self) -> None:
        if isinstance(self.files, (list, str)):
            files = (self.files,) if isinstance(self.files, str) else tuple(self.files)
            object.__setattr__(self, "files", files)
        where = f"dataset {self.name!r}"
        chosen = [key for key in ("hub", "files", "bundled") if getattr(self, key)]
        if len(chosen) != 1:
            got = " and ".join(chosen) if chosen else "none of them"
            raise UsageError(f"{where} needs exactly one of hub, files or bundled (got {got})")
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"{where}: unknown format {self.format!r}; use one of {FORMATS}")
        if self.format is not None and not self.files:
            raise UsageError(f"{where}: format applies to local files only")
        if self.config is not None and not self.hub:
            raise UsageError(f"{where}: config applies to hub datasets only")
        if self.bundled and self.bundled not in BUNDLED:
            raise UsageError(
                f"{where}: unknown bundled corpus {self.bundled!r}; available: {sorted(BUNDLED)}"
            )
        if (self.prompt_column is None) != (self.truth_column is None):
            raise UsageError(f"{where}: prompt_column and truth_column go together")
        if self.prompt_column and self.title_column:
            raise UsageError(f"{where}: title_column cannot be combined with prompt/truth columns")


def load_source(spec: SourceSpec) -> datasets.Dataset:
    """Rows of `spec` with exactly the string columns "prompt" and "truth"."""
    if spec.bundled:
        spec = _bundled_as_files(spec)
    try:
        raw = _load_hub(spec) if spec.hub else _load_files(spec)
        return _to_prompt_truth(raw, spec)
    except UnicodeDecodeError as exc:  # Arrow keeps JSON strings' bytes and decodes them late
        raise UsageError(f"dataset {spec.name!r}: {_find_bad_utf8(spec)}") from exc


def source_fingerprint(spec: SourceSpec) -> str:
    """Stable hash of what data `spec` describes, to notice a plan that changed under a run.

    The plan-local name and `base_dir` are left out (renaming a dataset or moving a project does
    not change its data); file contents are not read.
    """
    definition = dataclasses.asdict(spec)
    del definition["name"], definition["base_dir"]
    payload = json.dumps(["source-v1", definition], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def source_files(spec: SourceSpec) -> list[Path]:
    """The local files `spec` reads (every file of a save_to_disk folder); none for the hub."""
    if spec.hub:
        return []
    if spec.bundled:
        spec = _bundled_as_files(spec)
    files: list[Path] = []
    for path in _resolve_files(spec):
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub can be reached; when not, switch `datasets` to offline mode.

    Offline mode makes `datasets` answer from its local cache at once instead of retrying the
    network for tens of seconds. The answer is kept for the life of the process.
    """
    reachable = not _offline_by_env() and _tcp_probe(*_probe_address(), _PROBE_TIMEOUT_S)
    if not reachable:
        _enter_offline_mode()
    return reachable


def _offline_by_env() -> bool:
    flags = (os.environ.get(var, "").upper() for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in _TRUE for flag in flags) or bool(datasets.config.HF_HUB_OFFLINE)


def _probe_address() -> tuple[str, int]:
    endpoint = urllib.parse.urlsplit(datasets.config.HF_ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "", parsed.port or 80
    default_port = 443 if endpoint.scheme == "https" else 80
    return endpoint.hostname or "", endpoint.port or default_port


def _tcp_probe(host: str, port: int, timeout: float) -> bool:
    # A thread bounds the whole attempt: the socket timeout does not cover a stalled DNS lookup.
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=attempt, name="lmplay-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def _enter_offline_mode() -> None:
    if not _offline_by_env():
        logger.warning("the Hugging Face hub is not reachable; using cached hub datasets only")
    # Both libraries read these flags at import time; the environment covers worker processes.
    os.environ["HF_HUB_OFFLINE"] = "1"
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _load_hub(spec: SourceSpec) -> datasets.Dataset:
    online = hub_reachable()
    try:
        return datasets.load_dataset(spec.hub, spec.config, split=spec.split)
    except Exception as exc:
        if _is_local_disk_error(exc):
            raise
        where = f"dataset {spec.name!r} (hub {spec.hub}" + (
            f", config {spec.config})" if spec.config else ")"
        )
        hint = (
            f'point the plan at local files instead, e.g. "files": ["data/{spec.name}.parquet"], '
            "or run once with hub access and --save-datasets"
        )
        if not online:
            if isinstance(exc, (OSError, ValueError)) or _is_network_error(exc):
                raise HubUnavailableError(
                    f"{where} is not reachable and not cached; {hint}"
                ) from exc
            raise
        if isinstance(exc, OSError) or _is_network_error(exc):
            raise HubUnavailableError(
                f"{where} could not be loaded ({_first_line(exc)}); {hint}"
            ) from exc
        if isinstance(exc, ValueError):  # unknown config or split: datasets names the valid ones
            raise UsageError(f"{where}: {_first_line(exc)}") from exc
        raise


def _is_local_disk_error(exc: Exception) -> bool:
    return isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _is_network_error(exc: Exception) -> bool:
    # The hub client's HTTP library has changed across versions; match on where the error lives.
    return type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bundled_as_files(spec: SourceSpec) -> SourceSpec:
    path = resources.files("lmplay.data.bundled").joinpath(BUNDLED[spec.bundled])
    return dataclasses.replace(
        spec, bundled=None, files=(str(path),), format="json", title_column="title"
    )


def _load_files(spec: SourceSpec) -> datasets.Dataset:
    paths = _resolve_files(spec)
    fmt = spec.format or _infer_format(spec, paths)
    if fmt == "disk":
        return _load_disk(spec, paths)
    if spec.split != "train":
        # Every split name would read the same files, silently training on held-out rows.
        raise UsageError(
            f"dataset {spec.name!r}: {fmt} files have no split {spec.split!r}, only 'train'; "
            "give held-out rows their own files or a save_to_disk folder with that split"
        )
    builder = "json" if fmt == "jsonl" else fmt
    options = {"sample_by": "document"} if builder == "text" else {}
    for path in paths:
        if path.stat().st_size == 0:
            raise UsageError(f"dataset {spec.name!r}: file {path} is empty")
    try:
        rows = datasets.load_dataset(
            builder,
            data_files={"train": [str(path) for path in paths]},
            split="train",
            **options,
        )
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, UnicodeDecodeError):
            raise cause from exc
        reason = _first_line(cause)
        raise UsageError(f"dataset {spec.name!r}: cannot read its {fmt} files: {reason}") from exc
    return rows


def _resolve_files(spec: SourceSpec) -> list[Path]:
    paths: list[Path] = []
    for pattern in spec.files:
        path = Path(pattern).expanduser()
        if not path.is_absolute():
            path = Path(spec.base_dir) / path
        if any(char in str(path) for char in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not matches:
                raise UsageError(f"dataset {spec.name!r}: no file matches {path}")
            paths.extend(matches)
        elif path.exists():
            paths.append(path)
        else:
            raise UsageError(f"dataset {spec.name!r}: file not found: {path}")
    return list(dict.fromkeys(paths))


def _infer_format(spec: SourceSpec, paths: list[Path]) -> str:
    formats = {_path_format(spec, path) for path in paths}
    if len(formats) > 1:
        raise UsageError(
            f"dataset {spec.name!r} mixes file formats {sorted(formats)}; "
            "give each format its own dataset"
        )
    return formats.pop()


def _path_format(spec: SourceSpec, path: Path) -> str:
    if path.is_dir():
        if any((path / marker).exists() for marker in _DISK_MARKERS):
            return "disk"
        raise UsageError(
            f"dataset {spec.name!r}: folder {path} is not a save_to_disk folder; "
            f'list its files instead, e.g. "{path}/*.parquet"'
        )
    name = path.name.lower()
    for suffix, fmt in _EXTENSION_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise UsageError(
        f"dataset {spec.name!r}: cannot tell the format of {path} from its extension "
        f"({', '.join(_EXTENSION_FORMATS)}); set format to one of {FORMATS}"
    )


def _load_disk(spec: SourceSpec, paths: list[Path]) -> datasets.Dataset:
    if len(paths) != 1:
        raise UsageError(f"dataset {spec.name!r}: a save_to_disk dataset is one folder")
    loaded = datasets.load_from_disk(str(paths[0]))
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise UsageError(
                f"dataset {spec.name!r} has no split {spec.split!r}; splits: {sorted(loaded)}"
            )
        return loaded[spec.split]
    return loaded


def _to_prompt_truth(ds: datasets.Dataset, spec: SourceSpec) -> datasets.Dataset:
    if spec.prompt_column:
        columns = {"prompt": spec.prompt_column, "truth": spec.truth_column}
    else:
        columns = {"title": spec.title_column, "truth": spec.text_column}
    columns = {role: column for role, column in columns.items() if column}
    for column in columns.values():
        _check_text_column(ds, spec, column)
    _check_rows(ds, spec, columns["truth"])
    fingerprint = hashlib.sha256(
        json.dumps(["prompt-truth-v1", ds._fingerprint, columns], sort_keys=True).encode()
    ).hexdigest()[:32]
    return ds.map(
        _rows_to_prompt_truth,
        cache_file_name=_cache_file_name(ds, f"prompt-truth-{fingerprint}.arrow"),
        batched=True,
        fn_kwargs={"columns": columns},
        remove_columns=ds.column_names,
        features=datasets.Features(
            {"prompt": datasets.Value("string"), "truth": datasets.Value("string")}
        ),
        new_fingerprint=fingerprint,
        desc=f"reading {spec.name}",
    )


def _cache_file_name(ds: datasets.Dataset, name: str) -> str | None:
    # datasets writes a map's output beside its input; for a save_to_disk folder that would be
    # the user's folder, so such results go to datasets' cache instead.
    if not ds.cache_files:
        return None
    cache_root = Path(datasets.config.HF_DATASETS_CACHE).resolve()
    source = Path(ds.cache_files[0]["filename"]).resolve()
    if source.is_relative_to(cache_root):
        return None
    return str(cache_root / "lmplay" / name)


def _check_text_column(ds: datasets.Dataset, spec: SourceSpec, column: str) -> None:
    if column not in ds.column_names:
        raise UsageError(
            f"dataset {spec.name!r} has no column {column!r}; its columns are: "
            f"{', '.join(ds.column_names)}"
        )
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in {"string", "large_string"}):
        raise UsageError(f"dataset {spec.name!r}: column {column!r} holds {feature}, not text")


def _check_rows(ds: datasets.Dataset, spec: SourceSpec, column: str) -> None:
    """Refuse a dataset with no rows, a row whose text is missing (null), or only empty texts."""
    import pyarrow.compute as pc

    where = f"dataset {spec.name!r}"
    if len(ds) == 0:
        raise UsageError(f"{where} has no rows ({_files_named(spec)})")
    values = ds.data.column(column)
    if values.null_count:
        first = pc.index(pc.is_null(values), True).as_py()
        raise UsageError(
            f"{where}: {_locate_row(spec, first)} has no {column!r} (missing or null); "
            f"{values.null_count:,} of {len(ds):,} rows lack it: fix or remove them"
        )
    # The first rows nearly always show that some text is there, without reading the column.
    if pc.max(pc.utf8_length(values.slice(0, 1000))).as_py() == 0 and (
        pc.max(pc.utf8_length(values)).as_py() == 0
    ):
        raise UsageError(f"{where}: every row's {column!r} is empty ({_files_named(spec)})")


def _files_named(spec: SourceSpec) -> str:
    if spec.hub:
        return f"hub {spec.hub}"
    paths = _resolve_files(spec)
    return str(paths[0]) if len(paths) == 1 else f"{len(paths)} files from {paths[0]}"


def _locate_row(spec: SourceSpec, index: int) -> str:
    """`FILE row N` for the dataset's row `index` (rows counted from 1 in each file)."""
    if spec.hub:
        return f"row {index + 1} of hub {spec.hub}"
    paths = _resolve_files(spec)
    if len(paths) > 1 and all(_path_format(spec, p) == "json" for p in paths):
        for path in paths:
            rows = _json_rows(path)
            if index < rows:
                return f"{path} row {index + 1}"
            index -= rows
    if len(paths) == 1:
        return f"{paths[0]} row {index + 1}"
    return f"row {index + 1} of its files {paths[0]}, ..."


def _open_maybe_gzip(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _json_rows(path: Path) -> int:
    with _open_maybe_gzip(path) as f:
        return sum(1 for line in f if line.strip())


def _find_bad_utf8(spec: SourceSpec) -> str:
    """Where the first invalid UTF-8 byte is: `FILE line N is not valid UTF-8 (...)`."""
    if spec.hub:
        return f"hub {spec.hub} holds text that is not valid UTF-8"
    paths = [p for p in _resolve_files(spec) if p.is_file()]
    for path in paths:
        with _open_maybe_gzip(path) as f:
            for number, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    return (
                        f"{path} line {number} is not valid UTF-8 ({error.reason} at byte "
                        f"{error.start + 1} of the line); re-encode the file as UTF-8"
                    )
    return f"its files ({_files_named(spec)}) hold text that is not valid UTF-8"


def _rows_to_prompt_truth(batch: dict[str, list], columns: dict[str, str]) -> dict[str, list]:
    def texts(role: str) -> list[str]:
        if role not in columns:
            return [""] * len(batch[columns["truth"]])
        return [value or "" for value in batch[columns[role]]]

    truth = texts("truth")
    if "title" in columns:
        titles = texts("title")
        truth = [f"{t}\n\n{text}" if t else text for t, text in zip(titles, truth, strict=True)]
    return {"prompt": texts("prompt"), "truth": truth}
