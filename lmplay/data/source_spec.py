"""What a plan's dataset names: a hub dataset, local files or the bundled corpus (`SourceSpec`).

Checked when the plan is read, before any data is; `lmplay.data.sources` loads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from lmplay.errors import UsageError

FORMATS = ("text", "json", "jsonl", "parquet", "arrow", "disk")
BUNDLED = {"shakespeare": "shakespeare.jsonl.gz"}


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


def source_fingerprint(spec: SourceSpec) -> str:
    """Stable hash of what data `spec` describes, to notice a plan that changed under a run.

    The plan-local name and `base_dir` are left out (renaming a dataset or moving a project does
    not change its data); file contents are not read.
    """
    definition = dataclasses.asdict(spec)
    del definition["name"], definition["base_dir"]
    payload = json.dumps(["source-v1", definition], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def bundled_as_files(spec: SourceSpec) -> SourceSpec:
    """The bundled corpus `spec` names, as the local file it is shipped in."""
    path = resources.files("lmplay.data.bundled").joinpath(BUNDLED[spec.bundled])
    return dataclasses.replace(
        spec, bundled=None, files=(str(path),), format="json", title_column="title"
    )
