"""Load a plan's dataset (hub, local files or the bundled corpus) as rows of prompt/truth text.

Every source ends up as a `datasets.Dataset` with exactly two string columns: `prompt` (never
trained on; "" for plain text) and `truth`. Local files and the bundled corpus go through
`datasets.load_dataset` too, so their rows are cached as Arrow files like hub data.

What a dataset names is `source_spec.SourceSpec`; `hub` loads hub datasets and `local_files`
local files and `save_to_disk` folders; this module turns their rows into prompt/truth rows,
refusing a dataset without usable text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets

from lmplay.data.hub import load_hub
from lmplay.data.local_files import (
    files_named,
    find_bad_utf8,
    load_files,
    locate_row,
    resolve_files,
)
from lmplay.data.source_spec import SourceSpec, bundled_as_files
from lmplay.errors import UsageError


def load_source(spec: SourceSpec) -> datasets.Dataset:
    """Rows of `spec` with exactly the string columns "prompt" and "truth"."""
    if spec.bundled:
        spec = bundled_as_files(spec)
    try:
        raw = load_hub(spec) if spec.hub else load_files(spec)
        return _to_prompt_truth(raw, spec)
    except UnicodeDecodeError as exc:  # Arrow keeps JSON strings' bytes and decodes them late
        raise UsageError(f"dataset {spec.name!r}: {find_bad_utf8(spec)}") from exc


def source_files(spec: SourceSpec) -> list[Path]:
    """The local files `spec` reads (every file of a save_to_disk folder); none for the hub."""
    if spec.hub:
        return []
    if spec.bundled:
        spec = bundled_as_files(spec)
    files: list[Path] = []
    for path in resolve_files(spec):
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


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
        raise UsageError(f"{where} has no rows ({files_named(spec)})")
    values = ds.data.column(column)
    if values.null_count:
        first = pc.index(pc.is_null(values), True).as_py()
        raise UsageError(
            f"{where}: {locate_row(spec, first)} has no {column!r} (missing or null); "
            f"{values.null_count:,} of {len(ds):,} rows lack it: fix or remove them"
        )
    # The first rows nearly always show that some text is there, without reading the column.
    if pc.max(pc.utf8_length(values.slice(0, 1000))).as_py() == 0 and (
        pc.max(pc.utf8_length(values)).as_py() == 0
    ):
        raise UsageError(f"{where}: every row's {column!r} is empty ({files_named(spec)})")


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
