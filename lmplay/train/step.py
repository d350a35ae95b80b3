"""One optimizer step on a logical batch: mini-batches, token-weighted loss, clip, update.

Each mini-batch backpropagates `sum_of_token_losses / loss_tokens_in_the_whole_batch`, so the
accumulated gradient is the per-token mean over the logical batch whatever the split, including
an uneven last mini-batch and rows of different lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmplay.data.packing import pack
from lmplay.data.samples import Batch, Sample, collate
from lmplay.train.distributed.sharding import gradient_factor, gradient_sync, local_rank_share
from lmplay.train.loss import as_loss_model, plain_model
from lmplay.train.optim import set_lr
from lmplay.train.placement import Placement, Precision


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
    applied: bool = True  # False: loss or gradients not finite, the weights were left as they were


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
    """Sums over the mini-batches; `loss_sum` and `correct` stay on the device until the step
    reads them, once, together with the gradient norm."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    micro_steps: int = 0
    padding_tokens: int = 0
    padded_slots: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _Accumulated:
        # float64 keeps the summed loss as exact as the Python float it replaced; MPS has none.
        sum_dtype = torch.float32 if device.type == "mps" else torch.float64
        return cls(
            torch.zeros((), dtype=sum_dtype, device=device),
            torch.zeros((), dtype=torch.long, device=device),
        )


def prepare_mini_batches(
    samples: list[Sample], mini_batch_size: int, pack_len: int | None = None, pin: bool = False
) -> list[Batch]:
    """The logical batch as collated (or packed) CPU mini-batches, pinned when `pin` so that the
    copy to a CUDA device runs asynchronously; the data prefetcher calls this ahead of the step."""
    batches = []
    for chunk in split_mini_batches(samples, mini_batch_size):
        rows = pack(chunk, pack_len) if pack_len is not None else collate(chunk)
        batches.append(rows.pin_memory() if pin else rows)
    return batches


def accumulate_gradients(
    model: nn.Module, samples: list[Sample], mini_batches: list[Batch], placement: Placement
) -> _Accumulated:
    """Backward over every mini-batch of the logical batch `samples`, as prepared by
    `prepare_mini_batches`.

    With several ranks each runs its share of the mini-batches (`local_rank_share`), gradients
    are all-reduced once, on the last micro-step; the sums stay this rank's (see `train_step`).
    """
    total_loss_tokens = loss_tokens(samples)
    loss_model = as_loss_model(model)
    device, precision, world = placement.device, placement.precision, placement.world
    share = local_rank_share(mini_batches, world)
    factor = gradient_factor(world)
    acc = _Accumulated.zeros(device)
    for index, (rows, live) in enumerate(share):
        with gradient_sync(model, enabled=index == len(share) - 1):
            mini = _to_device(rows, device)
            loss_sum, correct = token_losses(loss_model, mini, precision)
            scaled = loss_sum / total_loss_tokens
            if factor != 1.0 or not live:
                scaled = scaled * (factor if live else 0.0)  # a stand-in only keeps step
            if precision.scaler is not None:
                scaled = precision.scaler.scale(scaled)
            scaled.backward()
        if live:
            acc.loss_sum += loss_sum.detach()
            acc.correct += correct
            acc.padding_tokens += mini.padding
            acc.padded_slots += mini.input_ids.numel()
    acc.micro_steps = len(mini_batches)  # the global count: the same at any world size
    return acc


def loss_tokens(samples: list[Sample]) -> int:
    return sum(len(sample.truth) for sample in samples)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    mini_batches: list[Batch],
    *,
    lr: float | None,
    grad_clip: float,
    placement: Placement,
    check_grads: bool = False,
    frozen: Sequence[nn.Parameter] = (),
) -> StepResult:
    """A full optimizer step at learning rate `lr` (None: the optimizer's own) over the logical
    batch `samples`, split into `mini_batches` by `prepare_mini_batches` (packed or one sample
    per row). The optimizer is not stepped when the loss or the gradient norm is not finite
    (under fp16 grad scaling, the scaler skips steps with overflowing gradients).

    The host waits for the device once: to read the loss, correct count and gradient norm.
    `frozen` parameters (a stage's `freeze`) lose their gradient before clipping, so the
    optimizer leaves them, their moments and their weight decay alone.
    """
    precision, world = placement.precision, placement.world
    optimizer.zero_grad(set_to_none=True)
    acc = accumulate_gradients(model, samples, mini_batches, placement)
    model = plain_model(model)
    for param in frozen:
        param.grad = None
    total = loss_tokens(samples)
    if precision.scaler is not None:
        precision.scaler.unscale_(optimizer)
    parameters = [p for p in model.parameters() if p.grad is not None]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    norm = _clip(parameters, max_norm)
    loss_sum, correct, grad_norm = _read_once(acc, norm)
    if world.distributed:  # this rank's sums -> the global batch's (gradients already are)
        loss_sum, correct, padding, slots = world.sum(
            [loss_sum, correct, acc.padding_tokens, acc.padded_slots]
        )
        correct, acc.padding_tokens, acc.padded_slots = round(correct), round(padding), round(slots)
    loss = loss_sum / total
    applied = math.isfinite(loss) and (precision.scaler is not None or math.isfinite(grad_norm))
    if applied:
        if lr is not None:
            set_lr(optimizer, lr)
        if precision.scaler is not None:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()
    missing = parameters_without_grad(model) if check_grads else []
    optimizer.zero_grad(set_to_none=True)
    return StepResult(
        loss=loss,
        accuracy=correct / total,
        loss_tokens=total,
        tokens=sum(sample.num_tokens - 1 for sample in samples),
        padding_tokens=acc.padding_tokens,
        padded_slots=acc.padded_slots,
        grad_norm=grad_norm,
        micro_steps=acc.micro_steps,
        missing_grads=tuple(missing),
        applied=applied,
    )


def _clip(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor | None:
    """The global gradient norm (before clipping), still on the device; None without grads."""
    if not parameters:
        return None
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    # FSDP2 gradients are sharded DTensors: their norm is one too, and the whole is wanted.
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def _read_once(acc: _Accumulated, grad_norm: torch.Tensor | None) -> tuple[float, int, float]:
    """(loss sum, correct, grad norm) as Python numbers, in one device-to-host copy."""
    dtype = acc.loss_sum.dtype  # float64, or float32 on MPS: counts stay exact up to 2**24
    values = [acc.loss_sum, acc.correct.to(dtype)]
    if grad_norm is not None:
        values.append(grad_norm.detach().to(dtype))
    read = torch.stack(values).tolist()
    return read[0], int(read[1]), read[2] if grad_norm is not None else 0.0


def parameters_without_grad(model: nn.Module) -> list[str]:
    """Trainable parameters the loss did not reach: usually a wiring bug in a new architecture."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if batch.input_ids.device == device:
        return batch
    # From pinned memory the copy is asynchronous: the host goes on queueing kernels.
    return batch.to(device, non_blocking=batch.input_ids.is_pinned())
