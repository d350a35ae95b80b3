"""The experiment registry: `@register("name", ...)` on a model class makes it an `--exp`.

A registration is an architecture plus default sizes, so presets of one class (`gpt2ish`,
`gpt2ish_124m`, ...) are several `@register` lines stacked on the same class. A renamed preset
keeps its old name as an alias that still works and warns once (`lmplay.compat.EXPERIMENT_ALIASES`).

The model contract: the class is built from `ModelArgs` (and keeps them as `self.args`), and

- `forward(input_ids, kv_cache=None, positions=None, segments=None)` maps token ids (B, T) to the
  final hidden states (B, T, C), after the final norm. `positions`/`segments` describe rows
  packed with several samples (see `token_positions`); a model without them trains one sample
  per row. `kv_cache` is for generation.
- `self.lm_head` is the output layer, an `nn.Linear(embed_dim, vocab_size)` (its weight may be
  tied to the token embedding). The model never applies it in `forward`: the training loss
  applies it a chunk of positions at a time (`lmplay.train.loss`), so full-vocabulary logits
  never exist for a whole mini-batch, and generation applies it to the last position only.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmplay.compat import EXPERIMENT_ALIASES, canonical_name
from lmplay.errors import UsageError
from lmplay.models.args import ModelArgs
from lmplay.models.modules import flops_per_token, matmul_params

SIZE_KEYS = ("num_blocks", "embed_dim", "num_heads", "context_len")

# Small enough that a forward+backward of every experiment takes milliseconds on a CPU.
TINY_SIZES = dict(num_blocks=2, embed_dim=32, num_heads=2, context_len=64)


@dataclass(frozen=True)
class Experiment:
    """One `--exp`: a model class and the sizes it is built at unless flags override them."""

    name: str
    description: str
    model_class: type[nn.Module]
    default_sizes: dict[str, int] = field(default_factory=dict)

    def args(self, **overrides: int | float | None) -> ModelArgs:
        """The default sizes with every non-None override applied, validated."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        args = ModelArgs(**{**self.default_sizes, **chosen})
        check = getattr(self.model_class, "check_args", None)
        if check is not None:
            check(args)
        return args

    @property
    def packs_rows(self) -> bool:
        """Whether forward takes `positions` and `segments`, so rows may hold several samples."""
        parameters = inspect.signature(self.model_class.forward).parameters
        return "positions" in parameters and "segments" in parameters

    def state_args(self) -> dict[str, Any]:
        """What a checkpoint stores beside `exp` and `model_args` to rebuild this experiment."""
        return {}

    def build(self, args: ModelArgs) -> nn.Module:
        return check_model_contract(self.model_class(args))

    def build_meta(self, args: ModelArgs) -> nn.Module:
        """The model without storage: instant even for the largest preset, for counting."""
        with torch.device("meta"):
            return check_model_contract(self.model_class(args))

    def build_meta_depth(self, args: ModelArgs, blocks: int) -> nn.Module:
        """The model without storage at `blocks` blocks deep, for counting by extrapolation."""
        return self.build_meta(dataclasses.replace(args, num_blocks=blocks))

    def num_params(self, args: ModelArgs) -> int:
        # parameters() yields a tied weight once, as the optimizer and checkpoints see it.
        return sum(p.numel() for p in self.build_meta(args).parameters())

    def flops_per_token(self, args: ModelArgs) -> int:
        return flops_per_token(args, matmul_params(self.build_meta(args)))


def check_model_contract(model: nn.Module) -> nn.Module:
    """`model` itself; a TypeError naming the class when it has no `lm_head` Linear."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} must expose its output layer as `self.lm_head`, an "
            f"nn.Linear(embed_dim, vocab_size), and return hidden states from forward; "
            f"got lm_head={type(head).__name__}"
        )
    return model


_REGISTRY: dict[str, Experiment] = {}


def register(
    name: str, description: str, **default_sizes: int
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering `--exp name`; stack several to add presets of one class."""
    if set(default_sizes) != set(SIZE_KEYS):
        raise ValueError(f"register({name!r}) needs exactly the sizes {SIZE_KEYS}")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is already registered")
        _REGISTRY[name] = Experiment(name, description, cls, dict(default_sizes))
        return cls

    return decorate


def experiment_aliases() -> dict[str, str]:
    return dict(sorted(EXPERIMENT_ALIASES.items()))


def experiment_names() -> list[str]:
    return sorted(_REGISTRY)


def get_experiment(name: str, stored_state_args: Mapping[str, Any] | None = None) -> Experiment:
    """The registered `name`, or `hf:PATH` (rebuilt from a checkpoint's `stored_state_args`)."""
    if name.startswith("hf:"):
        from lmplay.models.hf.experiments import hf_experiment

        return hf_experiment(name, dict(stored_state_args or {}))
    try:
        return _REGISTRY[canonical_name(name)]
    except KeyError:
        choices = ", ".join(experiment_names())
        raise UsageError(
            f"unknown --exp {name!r} (a registered name, or hf:PATH for a local transformers "
            f"causal LM folder); choose one of: {choices}"
        ) from None


def describe_experiments(overrides: Mapping[str, int | float | None] | None = None) -> str:
    """The `--exp list` table: each experiment at its default sizes with `overrides` applied."""
    header = ("exp", "blocks", "dim", "heads", "ctx", "params", "description")
    rows = [header]
    for name in experiment_names():
        exp = _REGISTRY[name]
        args = exp.args(**(overrides or {}))
        sizes = (args.num_blocks, args.embed_dim, args.num_heads, args.context_len)
        rows.append((name, *map(str, sizes), f"{exp.num_params(args):,}", exp.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]))
    if EXPERIMENT_ALIASES:
        renamed = ", ".join(f"{old} -> {new}" for old, new in experiment_aliases().items())
        lines += ["", f"old names, still accepted (they warn): {renamed}"]
    return "\n".join(lines)
