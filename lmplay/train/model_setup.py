"""The model a run trains: its identity (from flags, or the checkpoint it resumes), a size check
before anything is allocated, its adapters and frozen parameters, and the module the step calls.

The checkpoint's architecture and sizes win over flags; a flag that contradicts them is an
error rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.config import RunConfig
from lmplay.errors import CheckpointError, UsageError
from lmplay.models import Experiment, ModelArgs, canonical_name, get_experiment
from lmplay.models.lora import LoraSpec, lora_targets_layer
from lmplay.train.adapters import adapters_for, attach_adapters
from lmplay.train.distributed.sharding import parallelize
from lmplay.train.distributed.state import seed_rank
from lmplay.train.loss import LossModel
from lmplay.train.memory import enable_activation_checkpointing
from lmplay.train.placement import Placement
from lmplay.train.preflight import check_fits_in_memory
from lmplay.train.resume import Source, stored_arg


@dataclass
class BuiltModel:
    """The model and what describes it: `model` (plain, for state and generation) and
    `train_model` (its LossModel, compiled and wrapped or sharded as asked: what the step calls)."""

    exp: str
    args: ModelArgs
    experiment: Experiment
    model: nn.Module
    train_model: nn.Module
    lora: LoraSpec | None
    pack_len: int | None  # row length when short samples share rows; None: one sample per row

    def state_args(self) -> dict[str, Any]:
        """What rebuilds the model: its experiment, sizes, experiment extras and adapters."""
        args = {"exp": self.exp, "model_args": self.args.to_dict(), **self.experiment.state_args()}
        if self.lora is not None:
            args["lora"] = self.lora.to_dict()
        return args


def build_model(
    cfg: RunConfig, placement: Placement, source: Source, notes: list[str]
) -> BuiltModel:
    """Build the run's model on its device: sized, adapted, frozen, seeded per rank, compiled
    and wrapped (DDP) or sharded (FSDP) as the flags ask. Weights are loaded later, with the
    rest of the checkpoint."""
    stored = source.component("model")
    exp, model_args = model_identity(cfg, stored, source.path)
    experiment = get_experiment(exp, (stored or {}).get("state_args"))
    lora = adapters_for(cfg, stored)
    total, trainable = parameter_counts(experiment, model_args, cfg.system.default_freeze, lora)
    check_fits_in_memory(total, trainable, cfg.optim.optimizer, placement.device)
    model = experiment.build(model_args)
    lora = attach_adapters(cfg, model, stored, source.path, source.from_initial)
    if lora is not None:
        notes.append(lora.describe())
    apply_freezing(model, cfg.system.default_freeze)
    model.to(placement.device)
    seed_rank(placement.world, cfg.data.seed)
    if cfg.system.activation_checkpointing:
        enable_activation_checkpointing(model)
    forward_fn = None
    if cfg.system.compile_model:
        forward_fn = torch.compile(model.forward, mode=cfg.system.compile_mode)
    # Wrapped (DDP) or sharded (FSDP) before the optimizer is built: FSDP replaces parameters.
    loss_model = LossModel(model, forward_fn=forward_fn, compiled_head=cfg.system.compile_model)
    train_model = parallelize(
        loss_model, placement.world, placement.device, placement.precision.dtype
    )
    pack_len = _pack_len(cfg, experiment, model_args, notes)
    return BuiltModel(exp, model_args, experiment, model, train_model, lora, pack_len)


def model_identity(
    cfg: RunConfig, stored: dict[str, Any] | None, source: Path | None
) -> tuple[str, ModelArgs]:
    """The experiment name and sizes: the flags', or the stored model's checked against them."""
    if stored is None:
        experiment = get_experiment(cfg.model.exp)
        args = experiment.args(**cfg.model.size_overrides())
        return cfg.model.exp, _with_dropout(args, cfg.model.dropout)
    exp = stored_arg(stored, "exp", "model", source)
    raw_args = stored_arg(stored, "model_args", "model", source)
    if not isinstance(raw_args, dict):
        raise CheckpointError(f"checkpoint {source}: component 'model' has malformed model_args")
    # Without --dropout the model keeps its own (a checkpoint's, or a transformers folder's);
    # the resume check refuses a changed --dropout unless --allow-changed dropout accepts it.
    args = _with_dropout(ModelArgs.from_dict(raw_args), cfg.model.dropout)
    if canonical_name(str(exp)) != canonical_name(cfg.model.exp):
        raise CheckpointError(
            f"checkpoint {source} holds a '{exp}' model but --exp is '{cfg.model.exp}'; "
            f"pass --exp {exp}, or a different --model to start a new run"
        )
    for key, value in cfg.model.size_overrides().items():
        if value is not None and value != getattr(args, key):
            flag = "--" + key.replace("_", "-")
            raise UsageError(
                f"{flag} {value} contradicts the checkpoint {source} ({flag} "
                f"{getattr(args, key)}); drop the flag or use a different --model"
            )
    return exp, args


def _with_dropout(args: ModelArgs, dropout: float | None) -> ModelArgs:
    return args if dropout is None else dataclasses.replace(args, dropout=dropout)


def _pack_len(
    cfg: RunConfig, experiment: Experiment, model_args: ModelArgs, notes: list[str]
) -> int | None:
    if cfg.batch.no_packing:
        return None
    if not experiment.packs_rows:
        notes.append(f"{experiment.name} cannot pack rows (positions/segments): one sample per row")
        return None
    return model_args.context_len


def parameter_counts(
    experiment: Experiment, args: ModelArgs, default_freeze: bool, lora: LoraSpec | None
) -> tuple[int, int]:
    """(all, trainable) parameters, LoRA adapters included, in well under a second at any size.

    Counted on storage-free builds one and two blocks deep and extrapolated to the model's
    depth (counts grow by the same amount per block), since even a storage-free build of a
    very deep model takes minutes.
    """
    depths = [args.num_blocks] if args.num_blocks <= 2 else [1, 2]
    counts = []
    for blocks in depths:
        shallow = experiment.build_meta_depth(args, blocks)
        apply_freezing(shallow, default_freeze)
        counts.append(_counts_with_adapters(shallow, lora))
    if len(counts) == 1:
        return counts[0]
    (total_1, trainable_1), (total_2, trainable_2) = counts
    more = args.num_blocks - 1
    return total_1 + (total_2 - total_1) * more, trainable_1 + (trainable_2 - trainable_1) * more


def _counts_with_adapters(model: nn.Module, lora: LoraSpec | None) -> tuple[int, int]:
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    if lora is None:
        return total, sum(p.numel() for p in params if p.requires_grad)
    adapters = sum(  # A (rank x in) and B (out x rank) per adapted Linear; the base is frozen
        lora.rank * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module is not model.lm_head
        and any(lora_targets_layer(name, target) for target in lora.targets)
    )
    return total + adapters, adapters


def apply_freezing(model: nn.Module, default_freeze: bool) -> None:
    """`freeze = True` on a parameter freezes it; --default-freeze freezes all but `False`."""
    for param in model.parameters():
        marked = getattr(param, "freeze", None)
        frozen = marked if marked is not None else default_freeze
        if frozen:
            param.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError(
            "every parameter is frozen (--default-freeze freezes all but parameters marked "
            "`freeze = False`); mark some trainable or drop --default-freeze"
        )
