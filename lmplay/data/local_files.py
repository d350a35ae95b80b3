"""Local files and `save_to_disk` folders of a dataset: finding them, their format, loading them,
and saying where in them a bad row or byte is.
"""

from __future__ import annotations

import glob
import gzip
from pathlib import Path
from typing import BinaryIO

import datasets

from lmplay.data.source_spec import FORMATS, SourceSpec
from lmplay.errors import UsageError, first_line

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


def load_files(spec: SourceSpec) -> datasets.Dataset:
    paths = resolve_files(spec)
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
        reason = first_line(cause)
        raise UsageError(f"dataset {spec.name!r}: cannot read its {fmt} files: {reason}") from exc
    return rows


def resolve_files(spec: SourceSpec) -> list[Path]:
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


def files_named(spec: SourceSpec) -> str:
    if spec.hub:
        return f"hub {spec.hub}"
    paths = resolve_files(spec)
    return str(paths[0]) if len(paths) == 1 else f"{len(paths)} files from {paths[0]}"


def locate_row(spec: SourceSpec, index: int) -> str:
    """`FILE row N` for the dataset's row `index` (rows counted from 1 in each file)."""
    if spec.hub:
        return f"row {index + 1} of hub {spec.hub}"
    paths = resolve_files(spec)
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


def find_bad_utf8(spec: SourceSpec) -> str:
    """Where the first invalid UTF-8 byte is: `FILE line N is not valid UTF-8 (...)`."""
    if spec.hub:
        return f"hub {spec.hub} holds text that is not valid UTF-8"
    paths = [p for p in resolve_files(spec) if p.is_file()]
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
    return f"its files ({files_named(spec)}) hold text that is not valid UTF-8"
