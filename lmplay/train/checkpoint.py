"""Atomic, self-describing checkpoints (`.lmp`).

A checkpoint is one `torch.save`d dict, readable with `torch.load(weights_only=True)`:

    {"format": "lmplay-checkpoint", "format_version": 1, "lmplay_version": "0.1.0",
     "components": {name: {"state_args": ..., "state": ...}, ...}}

`state_args` rebuild a component (the model's experiment name and sizes, the plan, the
optimizer's settings), `state` restores it. Writing goes to a temporary file in the same folder,
which is fsynced and renamed over the old file, then the folder is fsynced: a crash at any moment
leaves either the old or the new checkpoint, never a torn one; temp files a killed writer leaves
behind are deleted by the next save of the same run.

Loading checks the zip archive's CRC32s first: `torch.load` does not, and would return weights
with flipped bytes as if nothing were wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from lmplay import __version__
from lmplay.atomic import atomic_write, remove_stale_temps
from lmplay.errors import CheckpointError

FORMAT = "lmplay-checkpoint"
FORMAT_VERSION = 1
REQUIRED_COMPONENTS = ("model",)


def save_checkpoint(path: Path, components: dict[str, dict[str, Any]]) -> None:
    for name, component in components.items():
        if set(component) != {"state_args", "state"}:
            raise ValueError(f"component {name} must hold exactly 'state_args' and 'state'")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lmplay_version": __version__,
        "components": components,
    }
    remove_stale_temps(path)
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, or CheckpointError saying why the file cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        _check_archive(path)
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read (truncated, corrupted or not a checkpoint: "
            f"{reason[:160]}); the file was left as it is"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an lmplay checkpoint; left as it is")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"checkpoint {path}: has no format version; left as it is")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {version} is newer than this lmplay "
            f"({__version__}, format {FORMAT_VERSION}) can read; upgrade lmplay"
        )
    components = payload.get("components")
    missing = [
        c for c in REQUIRED_COMPONENTS if not isinstance(components, dict) or c not in components
    ]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing components: {', '.join(missing)}")
    return payload


def _check_archive(path: Path) -> None:
    """Raise if a member of the zip archive fails its CRC32 (torch.load does not check them)."""
    if not zipfile.is_zipfile(path):
        return  # torch.load says what is wrong with it
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"CRC mismatch in {damaged}")


def stage_checkpoint_path(path: Path, stage: str) -> Path:
    """`out/gpt2ish.lmp` + stage `wiki` -> `out/gpt2ish.wiki.lmp`."""
    return path.with_name(f"{path.stem}.{stage}{path.suffix}")


def step_checkpoint_path(path: Path, step: int) -> Path:
    return path.with_name(f"{path.stem}.step{step:08d}{path.suffix}")


def bad_state_path(path: Path) -> Path:
    """Where the last good state goes when the loss diverges, beside the untouched checkpoint."""
    return path.with_name(f"{path.stem}.last-good{path.suffix}")
