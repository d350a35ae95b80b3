"""Atomic, self-describing checkpoints (`.lmp`).

A checkpoint is one `torch.save`d dict, readable with `torch.load(weights_only=True)`:

    {"format": "lmplay-checkpoint", "format_version": 2, "lmplay_version": "0.1.0",
     "components": {name: {"state_args": ..., "state": ...}, ...}}

`state_args` rebuild a component (the model's experiment name and sizes, the plan, the
optimizer's settings), `state` restores it. One `CheckpointMap` of named Stateful components is
walked both to save and to load, so a component that is saved is a component that is restored.
Format 1 files (components `optimizers`, `lr_schedulers`, `curriculum`) load under today's
names.

Writing goes to a temporary file in the same folder, which is fsynced and renamed over the old
file, then the folder is fsynced: a crash at any moment leaves either the old or the new
checkpoint, never a torn one; temp files a killed writer leaves behind are deleted by the next
save of the same run.

Loading checks the zip archive's CRC32s first: `torch.load` does not, and would return weights
with flipped bytes as if nothing were wrong.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from lmplay import __version__
from lmplay.atomic import atomic_write, remove_stale_temps
from lmplay.compat import checkpoint_v1_components
from lmplay.errors import CheckpointError, WriteFailed, one_line
from lmplay.models import ModelArgs, get_experiment
from lmplay.train.components import ModelState

FORMAT = "lmplay-checkpoint"
FORMAT_VERSION = 2
REQUIRED_COMPONENTS = ("model",)
# Anything a malformed piece of a checkpoint can raise while a component reads it.
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError)


class Stateful(Protocol):
    """Anything whose progress must survive an interrupt owns its state."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Entry:
    """One named component: what rebuilds it (`state_args`) and the object holding its state.

    `load` replaces `stateful.load_state_dict` where a run adopts stored state differently
    (a changed plan keeps only its unchanged stages).
    """

    stateful: Stateful
    state_args: dict[str, Any]
    load: Callable[[dict[str, Any]], None] | None = None


class CheckpointMap:
    """The one table of a run's components, walked by both `components()` and `load()`."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    def components(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"state_args": entry.state_args, "state": entry.stateful.state_dict()}
            for name, entry in self.entries.items()
        }

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.components())

    def load(
        self,
        stored: dict[str, dict[str, Any]],
        source: Path,
        skip: set[str] | frozenset = frozenset(),
    ) -> list[str]:
        """Restore every entry not in `skip`, in table order; returns notes for the user.

        A stored component this run has no entry for (a grad scaler after switching off fp16)
        is reported in a note; an entry with nothing stored, or with state it cannot read, is
        a CheckpointError naming the component.
        """
        notes = []
        for name, entry in self.entries.items():
            if name in skip:
                continue
            if name not in stored:
                raise CheckpointError(f"checkpoint {source}: has no '{name}' component")
            try:
                (entry.load or entry.stateful.load_state_dict)(stored[name]["state"])
            except CheckpointError:
                raise
            except _MALFORMED as error:
                raise CheckpointError(
                    f"checkpoint {source}: component '{name}' does not fit this run "
                    f"({one_line(error)}); the file was left as it is"
                ) from error
        unused = sorted(set(stored) - set(self.entries) - skip)
        if unused:
            notes.append(f"not used by this run: {', '.join(unused)} (stored in {source})")
        return notes


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
    try:
        remove_stale_temps(path)
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as error:
        # torch's zip writer reports a short write (a full disk) as a RuntimeError
        reason = (
            error.strerror or str(error)
            if isinstance(error, OSError)
            else f"the write failed: {one_line(error, 80)}; is the disk full?"
        )
        raise WriteFailed(
            f"cannot write checkpoint {path} ({reason}); "
            + ("the previous one is intact" if Path(path).exists() else "nothing was written")
        ) from error


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
    if version == 1 and isinstance(components, dict):
        payload["components"] = components = checkpoint_v1_components(components)
    if isinstance(components, dict):
        for name, component in components.items():
            if not isinstance(component, dict) or set(component) != {"state_args", "state"}:
                raise CheckpointError(
                    f"checkpoint {path}: component '{name}' must hold 'state_args' and 'state'; "
                    "the file was left as it is"
                )
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


def restore_model(stored: dict[str, Any], source: Path) -> tuple[str, ModelArgs, torch.nn.Module]:
    """(exp, sizes, model with the stored weights) from a checkpoint's `model` component.

    The one way every command rebuilds a model from a checkpoint, so a malformed component ends
    in the same one-line CheckpointError everywhere.
    """
    args = stored.get("state_args")
    if not isinstance(args, dict) or not isinstance(args.get("model_args"), dict):
        raise CheckpointError(
            f"checkpoint {source}: component 'model' has no usable state_args (exp and "
            "model_args); the file was left as it is"
        )
    exp = args.get("exp")
    model_args = ModelArgs.from_dict(args["model_args"])
    model = get_experiment(str(exp), args).build(model_args)
    if isinstance(args.get("lora"), dict):
        from lmplay.models.lora import LoraSpec, apply_lora

        apply_lora(model, LoraSpec.from_dict(args["lora"]))
    CheckpointMap({"model": Entry(ModelState(model), args)}).load({"model": stored}, source)
    _check_finite(model, source)
    return str(exp), model_args, model


def _check_finite(model: torch.nn.Module, source: Path) -> None:
    """Refuse weights holding NaN or infinity: exported or sampled, they only spread garbage."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"checkpoint {source}: weight '{name}' holds NaN or infinite values (a diverged "
                "run?); use an earlier checkpoint of the run"
            )
