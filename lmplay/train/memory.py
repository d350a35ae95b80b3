"""Activation checkpointing: keep only each block's input, recompute the block in backward.

A block's activations (attention scores, MLP hidden states) are the bulk of training memory at
long contexts; recomputing them costs about one more forward pass. The blocks' forward methods
are wrapped in place, so parameter names and checkpoints do not change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmplay.errors import UsageError
from lmplay.models.modules import KVCache


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Checkpoint every block of `model`.

    A model with its own `enable_activation_checkpointing()` method (a wrapped Hugging Face
    model, say) does it itself; otherwise the blocks are the modules of `model.blocks`.
    """
    own = getattr(model, "enable_activation_checkpointing", None)
    if callable(own):
        own()
        return
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UsageError(
            f"--activation-checkpointing: {type(model).__name__} has no `blocks` ModuleList "
            "and no enable_activation_checkpointing() method"
        )
    for block in blocks:
        if not getattr(block.forward, "checkpointed", False):
            block.forward = checkpointed(block.forward)


def checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    """`forward` that stores no activations when it runs with gradients.

    Without gradients (validation, generation) there is nothing to save, and a KV cache is
    written in forward, so a recomputation would append twice: both run `forward` directly.
    Dropout draws the same mask when recomputed (the RNG state is saved with the input).
    """

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        uses_cache = any(isinstance(a, KVCache) for a in (*args, *kwargs.values()))
        if not torch.is_grad_enabled() or uses_cache:
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.checkpointed = True  # type: ignore[attr-defined]
    return run
