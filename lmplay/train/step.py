"""One optimizer step on a logical batch: mini-batches, token-weighted loss, clip, update.

Each mini-batch backpropagates `sum_of_token_losses / loss_tokens_in_the_whole_batch`, so the
accumulated gradient is the per-token mean over the logical batch whatever the split, including
an uneven last mini-batch and rows of different lengths.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmplay.data.batcher import Batch, Sample, collate
from lmplay.data.packing import pack
from lmplay.train.distributed import (
    SINGLE,
    World,
    gradient_factor,
    gradient_sync,
    local_rank_share,
)
from lmplay.train.loss import as_loss_model, plain_model


@dataclass(frozen=True)
class StepResult:
    loss: float  # per-token mean over the logical batch
    accuracy: float  # share of targets the argmax predicted
    loss_tokens: int
    tokens: int  # real input tokens (no padding)
    padding_tokens: int
    padded_slots: int  # input positions computed, padding included
    grad_norm: float
    micro_steps: int
    missing_grads: tuple[str, ...] = ()  # trainable parameters with no gradient (--check-grads)


@dataclass
class Precision:
    """How forward passes run: autocast dtype (None = full precision) and the grad scaler."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def token_losses(
    loss_model: nn.Module, batch: Batch, precision: Precision
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's targets (0-dim, float32) and how many were right
    (0-dim int64), both on the batch's device; `loss_model` is a LossModel or wraps one."""
    with precision.autocast():
        return loss_model(batch.input_ids, batch.targets, batch.positions, batch.segments)


def split_mini_batches(samples: list[Sample], mini_batch_size: int) -> list[list[Sample]]:
    """Consecutive chunks of samples sorted by length, so rows of similar length share padding.

    The token-weighted loss is a sum over tokens, so grouping rows differently changes nothing
    but the padding (and float rounding).
    """
    ordered = sorted(samples, key=lambda sample: sample.num_tokens)
    return [ordered[i : i + mini_batch_size] for i in range(0, len(ordered), mini_batch_size)]


@dataclass
class _Accumulated:
    loss_sum: float = 0.0
    correct: int = 0
    micro_steps: int = 0
    padding_tokens: int = 0
    padded_slots: int = 0


def accumulate_gradients(
    model: nn.Module,
    samples: list[Sample],
    mini_batch_size: int,
    device: torch.device,
    precision: Precision,
    pack_len: int | None = None,
    world: World = SINGLE,
) -> _Accumulated:
    """Backward over every mini-batch of the logical batch (packed into rows of `pack_len`).

    With several ranks each runs its share of the mini-batches (`local_rank_share`), gradients
    are all-reduced once, on the last micro-step, and the sums are reduced to global figures.
    """
    total_loss_tokens = loss_tokens(samples)
    loss_model = as_loss_model(model)
    acc = _Accumulated()
    chunks = split_mini_batches(samples, mini_batch_size)
    share = local_rank_share(chunks, world)
    factor = gradient_factor(world)
    for index, (chunk, live) in enumerate(share):
        with gradient_sync(model, enabled=index == len(share) - 1):
            rows = pack(chunk, pack_len) if pack_len is not None else collate(chunk)
            mini = _to_device(rows, device)
            loss_sum, correct = token_losses(loss_model, mini, precision)
            scaled = loss_sum / total_loss_tokens
            if factor != 1.0 or not live:
                scaled = scaled * (factor if live else 0.0)  # a stand-in only keeps step
            if precision.scaler is not None:
                scaled = precision.scaler.scale(scaled)
            scaled.backward()
        if live:
            acc.loss_sum += float(loss_sum.detach())
            acc.correct += int(correct)
            acc.padding_tokens += mini.padding
            acc.padded_slots += mini.input_ids.numel()
    acc.micro_steps = len(chunks)  # the global count: the same at any world size
    return _reduced(acc, world)


def _reduced(acc: _Accumulated, world: World) -> _Accumulated:
    if not world.distributed:
        return acc
    loss_sum, correct, padding, slots = world.sum(
        [acc.loss_sum, acc.correct, acc.padding_tokens, acc.padded_slots]
    )
    return _Accumulated(loss_sum, round(correct), acc.micro_steps, round(padding), round(slots))


def loss_tokens(samples: list[Sample]) -> int:
    return sum(len(sample.truth) for sample in samples)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    *,
    mini_batch_size: int,
    grad_clip: float,
    device: torch.device,
    precision: Precision,
    set_lr: Callable[[], None] | None = None,
    check_grads: bool = False,
    pack_len: int | None = None,
    world: World = SINGLE,
) -> StepResult:
    """A full optimizer step. The optimizer is not stepped when the loss is not finite.

    With `pack_len`, short samples of a mini-batch share rows of that many tokens (the model
    must take `positions` and `segments`); the loss is the same, the padding less.
    """
    optimizer.zero_grad(set_to_none=True)
    acc = accumulate_gradients(model, samples, mini_batch_size, device, precision, pack_len, world)
    model = plain_model(model)
    total = loss_tokens(samples)
    loss = acc.loss_sum / total
    if precision.scaler is not None:
        precision.scaler.unscale_(optimizer)
    parameters = [p for p in model.parameters() if p.grad is not None]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = _clip(parameters, max_norm)
    if math.isfinite(loss):
        if set_lr is not None:
            set_lr()
        if precision.scaler is not None:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()
    missing = parameters_without_grad(model) if check_grads else []
    optimizer.zero_grad(set_to_none=True)
    return StepResult(
        loss=loss,
        accuracy=acc.correct / total,
        loss_tokens=total,
        tokens=sum(sample.num_tokens - 1 for sample in samples),
        padding_tokens=acc.padding_tokens,
        padded_slots=acc.padded_slots,
        grad_norm=grad_norm,
        micro_steps=acc.micro_steps,
        missing_grads=tuple(missing),
    )


def _clip(parameters: list[nn.Parameter], max_norm: float) -> float:
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    # FSDP2 gradients are sharded DTensors: their norm is one too, and the whole is wanted.
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def parameters_without_grad(model: nn.Module) -> list[str]:
    """Trainable parameters the loss did not reach: usually a wiring bug in a new architecture."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return batch if batch.input_ids.device == device else batch.to(device)
