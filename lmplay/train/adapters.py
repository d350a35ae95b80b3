"""Which LoRA adapters a run's model carries: the checkpoint's, or new ones from the flags.

A checkpoint trained with adapters resumes with the same ones (flags that name others are
refused). New adapters start either a fresh run or a run from `--initial-model`, whose base
weights are then moved under the adapted layers' names; a run's own checkpoint trained
without adapters does not silently gain them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lmplay.config import RunConfig
from lmplay.errors import UsageError
from lmplay.models.lora import LoraSpec, apply_lora, base_state_into_adapted


def lora_from_flags(cfg: RunConfig) -> LoraSpec | None:
    if not cfg.lora.lora_rank:
        return None
    return LoraSpec(cfg.lora.lora_rank, cfg.lora.alpha(), cfg.lora.targets(), cfg.lora.lora_dropout)


def adapters_for(cfg: RunConfig, stored_model: dict[str, Any] | None) -> LoraSpec | None:
    """The adapters the run's model will carry: the checkpoint's, else the flags' (checked
    against each other by `attach_adapters`)."""
    stored_args = (stored_model or {}).get("state_args") or {}
    if isinstance(stored_args.get("lora"), dict):
        return LoraSpec.from_dict(stored_args["lora"])
    return lora_from_flags(cfg)


def attach_adapters(
    cfg: RunConfig,
    model: nn.Module,
    stored_model: dict[str, Any] | None,
    source: Path | None,
    from_initial: bool,
) -> LoraSpec | None:
    """Inject the run's adapters into `model` (and fit `stored_model`'s weights to them)."""
    wanted = lora_from_flags(cfg)
    stored_args = (stored_model or {}).get("state_args") or {}
    if isinstance(stored_args.get("lora"), dict):
        spec = LoraSpec.from_dict(stored_args["lora"])
        if wanted is not None and wanted != spec:
            raise UsageError(
                f"--lora-* flags ({wanted.describe()}) contradict the checkpoint {source} "
                f"({spec.describe()}); drop them or use a different --model"
            )
        apply_lora(model, spec)
        return spec
    if wanted is None:
        return None
    if source is not None and not from_initial:
        raise UsageError(
            f"checkpoint {source} was trained without LoRA adapters; to add them start a new "
            f"run from it: --initial-model {source} --model NEW.lmp"
        )
    apply_lora(model, wanted)
    if stored_model is not None and isinstance(stored_model.get("state"), dict):
        stored_model["state"] = base_state_into_adapted(model, stored_model["state"])
    return wanted
