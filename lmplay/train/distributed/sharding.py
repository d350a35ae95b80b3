"""Each rank's share of a logical batch, gradient synchronisation, and how the model is
replicated (DDP) or sharded (FSDP2) across ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from lmplay.errors import UsageError
from lmplay.train.distributed.world import World

T = TypeVar("T")


def local_rank_share(
    items: Sequence[T], world: World, *, keep_step: bool = True
) -> list[tuple[T, bool]]:
    """This rank's part of `items` as (item, live) pairs: items r, r + W, r + 2W, ... (round
    robin, so with length-sorted mini-batches every rank gets short and long ones).

    With `keep_step` every rank gets ceil(len / W) entries: a rank that runs out takes stand-ins
    (`items[0]`, live False) whose results it must weigh by zero, so that every rank runs the
    same number of forward/backward passes and no collective waits forever.
    """
    mine = [(item, True) for item in items[world.rank :: world.size]]
    if keep_step and items:
        rounds = -(-len(items) // world.size)
        mine.extend((items[0], False) for _ in range(rounds - len(mine)))
    return mine


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """No gradient all-reduce inside unless `enabled` (the last micro-step of an optimizer step).

    DDP has `no_sync()`; an FSDP2 module `set_requires_gradient_sync`; a plain module neither.
    """
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: Any) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def gradient_factor(world: World) -> float:
    """DDP and FSDP average gradients over ranks; the loss is already divided by the global
    token count, so each rank's loss is multiplied by the world size to make that a sum."""
    return float(world.size)


def parallelize(
    loss_model: nn.Module, world: World, device: torch.device, amp_dtype: torch.dtype | None
) -> nn.Module:
    """The module the training step calls: `loss_model` itself in one process, else wrapped by
    DistributedDataParallel or sharded by FSDP2 (each block, then the LossModel as the root,
    so the output head runs inside the root's forward, unsharded)."""
    if not world.distributed:
        return loss_model
    if world.parallel == "fsdp":
        return _fully_shard(loss_model, amp_dtype)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss_model, device_ids=device_ids)


def _fully_shard(loss_model: nn.Module, amp_dtype: torch.dtype | None) -> nn.Module:
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    policy = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32)
    blocks = getattr(loss_model.model, "blocks", None)
    if blocks is None:
        raise UsageError("--parallel fsdp needs a model with `blocks` (one FSDP unit per block)")
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(loss_model, mp_policy=policy)
    register_fsdp_forward_method(loss_model, "scores")  # validation calls it, not forward
    return loss_model


def is_sharded(model: nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())
