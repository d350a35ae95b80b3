"""LoRA adapters (peft) on any model, lmplay's own or `hf:`, by module names.

`apply_lora` injects adapters into the named Linear layers in place, so the model keeps its
forward, `lm_head` and `args`, and freezes everything else: only the adapters train and every
base weight stays bitwise what it was. A checkpoint stores the adapters with the weights and the
`LoraSpec` in the model's state_args, so resume and `lmp_generator` rebuild the same layers;
`merge_lora` folds them into the base weights (W + alpha/rank * B @ A) for export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from lmplay.errors import UsageError

ADAPTER_MARK = ".lora_"  # in the names of adapter tensors (lora_A, lora_B, lora_dropout)


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple[str, ...]  # module names, matched as peft does: the name or its dotted tail
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraSpec:
        return cls(int(d["rank"]), float(d["alpha"]), tuple(d["targets"]), float(d["dropout"]))

    def describe(self) -> str:
        return (
            f"LoRA rank {self.rank}, alpha {self.alpha:g}, dropout {self.dropout:g} on "
            f"{', '.join(self.targets)}: only the adapters train"
        )


def lora_targets_layer(name: str, target: str) -> bool:
    """Whether the module called `name` is what `--lora-targets` `target` names."""
    return name == target or name.endswith("." + target)


def _check_targets(model: nn.Module, spec: LoraSpec) -> None:
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    head = model.lm_head
    for target in spec.targets:
        hits = [m for name, m in linears.items() if lora_targets_layer(name, target)]
        if not hits:
            names = sorted({n.rpartition(".")[2] for n, m in linears.items() if m is not head})
            raise UsageError(
                f"--lora-targets {target}: no Linear layer of the model is called that; "
                f"its Linear layers are: {', '.join(names)}"
            )
        if any(m is head for m in hits):
            raise UsageError(
                f"--lora-targets {target}: the output layer takes no adapters (the chunked loss "
                "reads its weight directly)"
            )


def apply_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """`model` with adapters in the targeted layers; only they require grad."""
    from peft import LoraConfig, inject_adapter_in_model

    _check_targets(model, spec)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.targets),
        lora_dropout=spec.dropout,
        bias="none",
    )
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_(ADAPTER_MARK in name)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """`model` with every adapter folded into its base layer and the plain layer put back."""
    if not any(ADAPTER_MARK in name for name, _ in model.named_parameters()):
        return model  # nothing to merge, and no need to import peft
    from peft.tuners.lora import LoraLayer

    adapted = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in adapted:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    return model


def base_state_into_adapted(adapted: nn.Module, base_state: Mapping[str, Tensor]) -> dict:
    """A state dict for a model with fresh adapters from the weights of the model without them.

    Base tensors move under peft's `base_layer` names; the adapters keep their initialization
    (lora_B is zero, so the adapted model starts as the base model). Keys the base state does
    not have, or has in excess, are left for the loader to report.
    """
    out: dict[str, Tensor] = {}
    used = set()
    for key, tensor in adapted.state_dict().items():
        if ADAPTER_MARK in key:
            out[key] = tensor
            continue
        base_key = key.replace(".base_layer.", ".")
        if base_key in base_state:
            out[key] = base_state[base_key]
            used.add(base_key)
    out.update({k: v for k, v in base_state.items() if k not in used})
    return out
