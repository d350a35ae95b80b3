"""The chunked head loss equals full-logits cross-entropy, without ever holding those logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lmplay.data.samples import IGNORE_INDEX
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.registry import ModelArgs
from lmplay.train.loss import LossModel, chunked_head_loss

VOCAB = 97
B, T, C = 3, 20, 16


def hidden_head_targets(seed: int, *, bias: bool = False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g, dtype=dtype, requires_grad=True)
    head = nn.Linear(C, VOCAB, bias=bias).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, C, generator=g))
        if bias:
            head.bias.copy_(torch.randn(VOCAB, generator=g))
    targets = torch.randint(0, VOCAB, (B, T), generator=g)
    with torch.no_grad():
        targets[1, :10] = head(hidden[1, :10]).argmax(-1)  # some right guesses to count
    targets[0, :5] = IGNORE_INDEX  # a prompt
    targets[2, 11:] = IGNORE_INDEX  # padding
    return hidden, head, targets


def reference(hidden, head, targets):
    """Full logits, F.cross_entropy: the unchunked path."""
    logits = head(hidden)  # (B, T, V)
    flat = logits.flatten(0, 1)
    loss_sum = F.cross_entropy(flat, targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    valid = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets)[valid].sum()
    return loss_sum, correct, logits


def grads_of(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


@pytest.mark.parametrize("chunk_size", [1, 7, 20, 60, 1000])  # 60 positions in all
@pytest.mark.parametrize("bias", [False, True])
def test_loss_accuracy_and_gradients_equal_the_unchunked_path(chunk_size: int, bias: bool) -> None:
    hidden, head, targets = hidden_head_targets(seed=chunk_size, bias=bias)
    params = [hidden, *head.parameters()]
    want_loss, want_correct, _ = reference(hidden, head, targets)
    want_grads = grads_of(want_loss, *params)
    got = chunked_head_loss(hidden, head, targets, chunk_size=chunk_size)
    assert got.loss_sum.dim() == 0 and got.correct.dim() == 0
    assert got.loss_sum.dtype == torch.float64 and got.correct.dtype == torch.long
    torch.testing.assert_close(got.loss_sum, want_loss, rtol=1e-12, atol=0)
    assert int(got.correct) == int(want_correct) > 0
    for got_grad, want_grad in zip(grads_of(got.loss_sum, *params), want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_backward_scales_by_the_incoming_gradient() -> None:
    hidden, head, targets = hidden_head_targets(seed=1)
    plain = grads_of(chunked_head_loss(hidden, head, targets, chunk_size=8).loss_sum, hidden)
    scaled = grads_of(chunked_head_loss(hidden, head, targets, chunk_size=8).loss_sum / 37, hidden)
    torch.testing.assert_close(scaled[0], plain[0] / 37, rtol=1e-12, atol=0)


def test_a_second_backward_through_the_same_forward_is_refused() -> None:
    """Backward scales the gradients kept by forward in place, so it cannot run twice."""
    hidden, head, targets = hidden_head_targets(seed=6)
    loss = chunked_head_loss(hidden, head, targets, chunk_size=8).loss_sum
    first = torch.autograd.grad(loss, hidden, retain_graph=True)[0]
    assert first.abs().sum() > 0
    with pytest.raises(RuntimeError, match="one backward pass per forward"):
        torch.autograd.grad(loss, hidden)


def test_per_position_losses_and_predictions_equal_the_full_logits() -> None:
    hidden, head, targets = hidden_head_targets(seed=2)
    _, _, logits = reference(hidden, head, targets)
    with torch.no_grad():
        got = chunked_head_loss(hidden, head, targets, chunk_size=7, per_position=True)
    want = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    torch.testing.assert_close(got.losses, want.float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(got.predictions, logits.argmax(-1))
    assert (got.losses[targets == IGNORE_INDEX] == 0).all()


@pytest.mark.slow  # torch.compile: seconds on the CPU
def test_compiled_scores_equal_the_unchunked_path() -> None:
    """--compile-model's head: the same loss, count, gradients and per-position scores."""
    hidden, head, targets = hidden_head_targets(seed=5, bias=True)
    params = [hidden, *head.parameters()]
    want_loss, want_correct, logits = reference(hidden, head, targets)
    got = chunked_head_loss(hidden, head, targets, chunk_size=7, compiled=True)  # 8 x 7 + 4
    torch.testing.assert_close(got.loss_sum, want_loss, rtol=1e-12, atol=0)
    assert int(got.correct) == int(want_correct) > 0
    want_grads = grads_of(want_loss, *params)
    for got_grad, want_grad in zip(grads_of(got.loss_sum, *params), want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        scores = chunked_head_loss(
            hidden, head, targets, chunk_size=7, per_position=True, compiled=True
        )
    want = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    torch.testing.assert_close(scores.losses, want.float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(scores.predictions, logits.argmax(-1))


class _LargestTensor(TorchDispatchMode):
    """Records the most elements any tensor produced by an operator had."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_holds_more_than_one_chunk_of_logits() -> None:
    hidden, head, targets = hidden_head_targets(seed=3, dtype=torch.float32)
    chunk = 32  # larger than the head (V x C) and the hidden states (N x C)
    with _LargestTensor() as seen:
        out = chunked_head_loss(hidden, head, targets, chunk_size=chunk)
        out.loss_sum.backward()
    assert chunk * VOCAB < B * T * VOCAB
    assert seen.largest == chunk * VOCAB  # the logits of one chunk, never of all positions
    with _LargestTensor() as seen:
        reference(hidden, head, targets)[0].backward()
    assert seen.largest == B * T * VOCAB  # while the unchunked path holds them all


def tiny_model(exp: str, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return get_experiment(exp).build(ModelArgs(**TINY_SIZES, vocab_size=VOCAB)).to(dtype)


@pytest.mark.parametrize("exp", ["gpt2ish", "modern"])  # tied and untied heads
def test_every_parameter_gets_the_gradient_of_full_logits(exp: str) -> None:
    model = tiny_model(exp)
    assert (model.lm_head.weight is model.wte.weight) == (exp == "gpt2ish")
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(4))
    targets = x.roll(-1, dims=1)
    targets[:, -1] = IGNORE_INDEX
    targets[1, :3] = IGNORE_INDEX
    params = list(model.parameters())
    want_loss, want_correct, _ = reference(model(x), model.lm_head, targets)
    want = grads_of(want_loss, *params)
    loss_sum, correct = LossModel(model, chunk_size=9)(x, targets)
    torch.testing.assert_close(loss_sum, want_loss, rtol=1e-12, atol=0)
    assert int(correct) == int(want_correct)
    for p, got, expected in zip(params, grads_of(loss_sum, *params), want, strict=True):
        assert got.dtype == p.dtype
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("exp", ["gpt2ish", "modern"])
def test_bf16_autocast_runs_and_tracks_float32(exp: str) -> None:
    model = tiny_model(exp, torch.float32)
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(5))
    targets = x.roll(-1, dims=1)
    fp32_loss, _ = LossModel(model, chunk_size=16)(x, targets)
    (fp32_grad,) = grads_of(fp32_loss, model.lm_head.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_sum, _ = LossModel(model, chunk_size=16)(x, targets)
    assert loss_sum.dtype == torch.float32  # logits and softmax stay in float32
    (grad,) = grads_of(loss_sum, model.lm_head.weight)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    torch.testing.assert_close(loss_sum, fp32_loss, rtol=2e-2, atol=0)
    cosine = F.cosine_similarity(grad.flatten(), fp32_grad.flatten(), dim=0)
    assert cosine > 0.99


def test_no_gradient_is_computed_under_no_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmplay.train.loss as loss_module

    calls = []
    real = loss_module._logit_grad_
    monkeypatch.setattr(loss_module, "_logit_grad_", lambda *a: calls.append(1) or real(*a))
    hidden, head, targets = hidden_head_targets(seed=7)
    with torch.no_grad():
        got = chunked_head_loss(hidden, head, targets, chunk_size=8)
    assert calls == [] and not got.loss_sum.requires_grad
    chunked_head_loss(hidden, head, targets, chunk_size=8)
    assert len(calls) == -(-B * T // 8)  # one per chunk when a graph is recorded


def test_a_bad_chunk_size_is_refused() -> None:
    hidden, head, targets = hidden_head_targets(seed=6)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        chunked_head_loss(hidden, head, targets, chunk_size=0)
