"""Optimizers by name, and the weight-decay rule that splits parameters into two groups.

No decay for biases, weights of normalization layers, embeddings, and any parameter marked
`skip_weight_decay = True`; decay for every other trainable parameter.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmplay.errors import UsageError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
OPTIMIZER_EXTRAS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}


@dataclass(frozen=True)
class DecayGroups:
    decay: list[tuple[str, nn.Parameter]]
    no_decay: list[tuple[str, nn.Parameter]]

    def table(self) -> dict[str, dict[str, int]]:
        return {
            "decay": {"tensors": len(self.decay), "parameters": _numel(self.decay)},
            "no_decay": {"tensors": len(self.no_decay), "parameters": _numel(self.no_decay)},
        }

    def describe(self) -> str:
        rows = [f"{'group':<10}{'tensors':>9}{'parameters':>14}"]
        for group, counts in self.table().items():
            rows.append(f"{group:<10}{counts['tensors']:>9}{counts['parameters']:>14,}")
        return "\n".join(rows)


def is_norm(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)
    return isinstance(module, norm_types) or type(module).__name__.endswith("Norm")


def decay_groups(model: nn.Module) -> DecayGroups:
    """Every trainable parameter in exactly one group (shared tensors counted once)."""
    no_decay_ids: set[int] = set()
    for module in model.modules():
        skip_module = is_norm(module) or isinstance(module, nn.Embedding)
        for name, param in module.named_parameters(recurse=False):
            if skip_module or name == "bias" or name.endswith("_bias"):
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # yields each shared tensor once
        if not param.requires_grad:
            continue
        skip = id(param) in no_decay_ids or getattr(param, "skip_weight_decay", False)
        (no_decay if skip else decay).append((name, param))
    return DecayGroups(decay, no_decay)


def build_optimizer(
    name: str, model: nn.Module, *, lr: float, weight_decay: float, device: torch.device
) -> tuple[torch.optim.Optimizer, DecayGroups]:
    if name not in OPTIMIZERS:
        raise UsageError(f"--optimizer {name}: unknown; choose one of: {', '.join(OPTIMIZERS)}")
    groups = decay_groups(model)
    param_groups = [
        {"params": [p for _, p in groups.decay], "weight_decay": weight_decay},
        {"params": [p for _, p in groups.no_decay], "weight_decay": 0.0},
    ]
    optimizer_class = OPTIMIZERS[name]
    kwargs = {
        "lr": lr,
        **OPTIMIZER_EXTRAS.get(name, {}),
        **_fast_implementation(name, device),
    }
    return optimizer_class(param_groups, **kwargs), groups


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


FUSED_ON_ACCELERATORS = {"adam", "adamw", "sgd"}


def _fast_implementation(name: str, device: torch.device) -> dict[str, bool]:
    """Fused kernels on CUDA where torch has them, else the multi-tensor (foreach) path.

    The CPU keeps foreach: its results are bit-identical run to run, which resume tests rely on.
    """
    accepted = inspect.signature(OPTIMIZERS[name]).parameters
    if device.type == "cuda" and name in FUSED_ON_ACCELERATORS and "fused" in accepted:
        return {"fused": True}
    if "foreach" in accepted:
        return {"foreach": True}
    return {}


def _numel(params: list[tuple[str, nn.Parameter]]) -> int:
    return sum(p.numel() for _, p in params)
