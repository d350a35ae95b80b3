"""The output head and cross-entropy, applied a chunk of positions at a time.

A model returns hidden states (B, T, C) and exposes its output layer as `lm_head`. Full-vocabulary
logits of a whole mini-batch (B * T * V floats: 3.3 GB for 64 x 256 tokens of GPT-2's vocabulary)
would dominate memory, so `chunked_head_loss` computes them for `chunk_size` positions at a time:
logits (float32), cross-entropy, the argmax and, when gradients are wanted, the gradient of the
summed loss with respect to the hidden states and the head's weight. Those gradients are kept
(they are the size of the inputs, not of the logits) and scaled by the incoming gradient in
backward, so no chunk's logits are stored or recomputed.

`LossModel` wraps a model and returns the summed loss and the correct count of a mini-batch; it
is the module that the training step calls, that `torch.compile` speeds up (the inner model's
forward) and that DistributedDataParallel can wrap, so the whole forward and loss go through its
`forward`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmplay.data.samples import IGNORE_INDEX

# 8,192 positions x 50,257 float32 logits is 1.6 GB. At 1,024 one chunk's logits (their
# exponentials and their gradient reuse the same storage) take 0.2 GB: one gpt2ish step at
# 16 x 1,024 tokens peaks at 1.9 GiB of RAM (bench/compare.py --step-memory), and the matmuls,
# 1,024 x embed_dim x vocabulary, are still large enough to run at full speed.
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class HeadLoss:
    """What the head gives for a batch of positions, without keeping their logits."""

    loss_sum: Tensor  # 0-dim, float32 or wider: summed cross-entropy of the targets (has grad)
    correct: Tensor  # 0-dim int64: targets the argmax predicted
    losses: Tensor | None = None  # (B, T) float32 per position, 0 where ignored (per_position)
    predictions: Tensor | None = None  # (B, T) int64 argmax per position (per_position)


def compute_dtype(hidden: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on for the hidden states' device, else theirs."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


class _ChunkStorage:
    """One chunk's (n, V) tensors, allocated once per call and reused by every chunk.

    A fresh 0.2 GB tensor per chunk pays its page faults again: on the CPU that took a fifth of
    the time of the forward matmul that fills it. `low` holds the matmul's output (and later the
    gradient in the matmul dtype), `wide` the float32 (or wider) logits; they are one tensor when
    the matmul runs in float32 already, or when the compiled scores read `low` directly.
    """

    def __init__(
        self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device, *, wide: bool
    ) -> None:
        wide_dtype = torch.promote_types(dtype, torch.float32)
        self.low = torch.empty((rows, vocab), dtype=dtype, device=device)
        self.wide = self.low
        if wide and wide_dtype != dtype:
            self.wide = torch.empty_like(self.low, dtype=wide_dtype)

    def in_matmul_dtype(self, grad: Tensor) -> Tensor:
        """`grad` (n, V) cast to the matmul dtype, in `low` (whose logits are consumed by now)."""
        return grad if self.wide is self.low else self.low[: grad.size(0)].copy_(grad)


def _chunk_scores(
    h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, storage: _ChunkStorage
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """exp(logits - row max) (n, V) in float32 or wider, their row sums, per-position losses
    and argmax.

    `torch.logsumexp` and `argmax` would each read the logits again (logsumexp alone took as long
    as the forward matmul on the CPU); one `max` gives both the argmax and logsumexp's shift,
    and the exponentials, kept in the logits' own storage, are the softmax's numerators.
    """
    n = h.size(0)
    logits = torch.mm(h, weight.t(), out=storage.low[:n])  # (n, V)
    if storage.wide is not storage.low:
        logits = storage.wide[:n].copy_(logits)
    if bias is not None:
        logits += bias.to(logits.dtype)
    target_logits = logits.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)  # (n,)
    row_max, argmax = logits.max(dim=-1)  # (n,), (n,)
    exps = logits.sub_(row_max.unsqueeze(1)).exp_()  # (n, V), overwrites the logits
    sums = exps.sum(dim=-1)  # (n,)
    losses = (row_max + sums.log() - target_logits) * (targets != IGNORE_INDEX)  # 0 where ignored
    return exps, sums, losses, argmax


def _logit_grad_(exps: Tensor, sums: Tensor, targets: Tensor) -> Tensor:
    """d(sum of losses)/d(logits) = softmax - one_hot(target), zero rows where ignored.

    Computed in the exponentials' own storage, so a chunk never holds two (n, V) tensors.
    """
    valid = (targets != IGNORE_INDEX).to(exps.dtype)  # (n,)
    grad = exps.mul_((valid / sums).unsqueeze(1))  # softmax, or 0 on an ignored row
    return grad.scatter_add_(1, targets.clamp(min=0).unsqueeze(1), -valid.unsqueeze(1))


def _scores_in_place(
    logits: Tensor, bias: Tensor | None, targets: Tensor, want_grad: bool
) -> tuple[Tensor, Tensor]:
    """Per-position losses and argmax of `logits` (n, V); with `want_grad`, `logits` is then
    overwritten with d(sum of losses)/d(logits) in its own dtype.

    The same values as `_chunk_scores` and `_logit_grad_`, written for `torch.compile`: it fuses
    them into a row reduction and one elementwise pass that reads the matmul's output, computes
    in float32 and writes the gradient back where the logits were. Eager, this would hold three
    float32 temporaries of the logits' size.
    """
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if bias is not None:
        x = x + bias.to(x.dtype)
    row_max, argmax = x.max(dim=-1)
    shifted = x - row_max.unsqueeze(1)
    sums = shifted.exp().sum(dim=-1)
    valid = targets != IGNORE_INDEX
    target_logits = x.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)
    losses = (row_max + sums.log() - target_logits) * valid
    if want_grad:
        one_hot = torch.arange(x.size(1), device=x.device).unsqueeze(0) == targets.unsqueeze(1)
        softmax = shifted.exp() * (valid / sums).unsqueeze(1)  # 0 on an ignored row
        logits.copy_(softmax - one_hot.to(x.dtype))  # an ignored target (-100) matches no column
    return losses, argmax


@functools.cache
def _compiled_scores() -> Callable[..., tuple[Tensor, Tensor]]:
    return torch.compile(_scores_in_place)


class _ChunkedHeadLoss(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T (+ bias)`; see `chunked_head_loss`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,  # (N, C)
        weight: Tensor,  # (V, C)
        bias: Tensor | None,  # (V,)
        targets: Tensor,  # (N,)
        chunk_size: int,
        dtype: torch.dtype,
        per_position: bool,
        grad_enabled: bool,
        compiled: bool,
    ) -> tuple[Tensor, ...]:
        # Forward runs with grad mode off, so whether the caller records a graph comes in as
        # `grad_enabled`: under no_grad (validation) no gradient is computed at all.
        need_hidden, need_weight, need_bias = (
            grad_enabled and need for need in ctx.needs_input_grad[:3]
        )
        wide = torch.promote_types(dtype, torch.float32)
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=accumulate) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=accumulate) if need_bias else None
        loss_sum = torch.zeros((), dtype=wide, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        losses, predictions = [], []
        w = weight.to(dtype)  # (V, C), cast once for every chunk
        rows = min(chunk_size, hidden.size(0))
        storage = _ChunkStorage(rows, w.size(0), dtype, hidden.device, wide=not compiled)
        want_grad = need_hidden or need_weight or need_bias
        for start in range(0, hidden.size(0), chunk_size):
            h = hidden[start : start + chunk_size].to(dtype)  # (n, C)
            t = targets[start : start + chunk_size]  # (n,)
            if compiled:
                logits = torch.mm(h, w.t(), out=storage.low[: h.size(0)])  # (n, V)
                chunk_losses, argmax = _compiled_scores()(logits, bias, t, want_grad)
                g = grad = logits  # the gradient, in the matmul dtype
            else:
                exps, sums, chunk_losses, argmax = _chunk_scores(h, w, bias, t, storage)
            loss_sum += chunk_losses.sum()
            correct += ((argmax == t) & (t != IGNORE_INDEX)).sum()
            if per_position:
                losses.append(chunk_losses.float())
                predictions.append(argmax)
            if not want_grad:
                continue
            if not compiled:
                grad = _logit_grad_(exps, sums, t)  # (n, V), float32 or wider
                g = storage.in_matmul_dtype(grad)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = g @ w  # (n, C)
            if grad_weight is not None and grad_weight.dtype == g.dtype:
                grad_weight.addmm_(g.t(), h)  # (V, C), no temporary of the weight's size
            elif grad_weight is not None:
                grad_weight += g.t() @ h
            if grad_bias is not None:
                grad_bias += grad.sum(0, dtype=accumulate)
        # Not inputs or outputs, so kept on ctx rather than saved: backward scales them in place
        # (a second backward through the same graph is refused instead of reusing them).
        ctx.grads = (grad_hidden, grad_weight, grad_bias)
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(correct)
        if not per_position:
            return loss_sum, correct
        losses_t, predictions_t = torch.cat(losses), torch.cat(predictions)
        ctx.mark_non_differentiable(losses_t, predictions_t)
        return loss_sum, correct, losses_t, predictions_t

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        if ctx.grads is None:
            raise RuntimeError("the chunked head loss supports one backward pass per forward")
        grad_hidden, grad_weight, grad_bias = ctx.grads
        ctx.grads = None  # freed once used
        hidden_dtype, weight_dtype, bias_dtype = ctx.input_dtypes

        def scaled(grad: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
            # In place: these buffers belong to this call alone, and a copy of the weight's size
            # would be allocated (and page-faulted) again for every mini-batch.
            return None if grad is None else grad.mul_(grad_loss).to(dtype)

        return (
            scaled(grad_hidden, hidden_dtype),
            scaled(grad_weight, weight_dtype),
            scaled(grad_bias, bias_dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def chunked_head_loss(
    hidden: Tensor,
    head: nn.Linear,
    targets: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    per_position: bool = False,
    compiled: bool = False,
) -> HeadLoss:
    """Summed cross-entropy and correct count of `head(hidden)` against `targets`.

    hidden (B, T, C) and targets (B, T), IGNORE_INDEX where a position carries no loss. At most
    `chunk_size` positions' logits exist at once. Matmuls run in autocast's dtype when autocast
    is on (else the hidden states' dtype), logits and softmax in float32 or wider. With
    `per_position`, also each position's loss and argmax (shaped like `targets`). `compiled`
    computes each chunk's scores and gradient with a `torch.compile`d function (the same values,
    in fewer passes over the logits; it compiles on first use).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    B, T, C = hidden.shape
    dtype = compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        out = _ChunkedHeadLoss.apply(
            hidden.reshape(B * T, C),
            head.weight,
            head.bias,
            targets.reshape(B * T),
            chunk_size,
            dtype,
            per_position,
            torch.is_grad_enabled(),
            compiled,
        )
    if not per_position:
        return HeadLoss(out[0], out[1])
    return HeadLoss(out[0], out[1], out[2].view(B, T), out[3].view(B, T))


class LossModel(nn.Module):
    """A model and its chunked loss: (loss_sum, correct) of one mini-batch, 0-dim on the device.

    `forward_fn` replaces the model's forward for this call path (a `torch.compile`d forward);
    `model` keeps its own forward for generation and for checkpoints with plain weights.
    `compiled_head` computes the head's scores with `torch.compile` too (see chunked_head_loss).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        forward_fn: Callable[..., Tensor] | None = None,
        compiled_head: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.compiled_head = compiled_head
        self._forward_fn = forward_fn

    def hidden_states(
        self, input_ids: Tensor, positions: Tensor | None = None, segments: Tensor | None = None
    ) -> Tensor:
        forward = self._forward_fn or self.model
        if segments is None:
            return forward(input_ids)  # models that take no positions/segments work too
        return forward(input_ids, positions=positions, segments=segments)  # (B, T, C)

    def forward(
        self,
        input_ids: Tensor,
        targets: Tensor,
        positions: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        hidden = self.hidden_states(input_ids, positions, segments)
        out = chunked_head_loss(
            hidden,
            self.model.lm_head,
            targets,
            chunk_size=self.chunk_size,
            compiled=self.compiled_head,
        )
        return out.loss_sum, out.correct

    def scores(self, input_ids: Tensor, targets: Tensor) -> HeadLoss:
        """Loss, correct count, and per-position losses and argmax (for validation)."""
        hidden = self.hidden_states(input_ids)
        return chunked_head_loss(
            hidden,
            self.model.lm_head,
            targets,
            chunk_size=self.chunk_size,
            per_position=True,
            compiled=self.compiled_head,
        )


def as_loss_model(module: nn.Module) -> nn.Module:
    """`module` when it computes the loss already (a LossModel, or a wrapper of one such as
    DistributedDataParallel), else a LossModel around the plain model `module`."""
    if isinstance(module, LossModel) or isinstance(getattr(module, "module", None), LossModel):
        return module
    return LossModel(module)


def plain_model(module: nn.Module) -> nn.Module:
    """The model inside a LossModel (and inside a wrapper of one), or `module` itself."""
    inner = getattr(module, "module", module)
    return inner.model if isinstance(inner, LossModel) else module
