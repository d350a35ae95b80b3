"""Token-weighted accumulation: the gradient does not depend on how a batch is split."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from lmp_testing import evaluate

from lmplay.data.samples import Sample
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.registry import ModelArgs
from lmplay.train.optim import build_optimizer
from lmplay.train.placement import Placement, Precision
from lmplay.train.step import (
    StepResult,
    accumulate_gradients,
    prepare_mini_batches,
    train_step,
)

VOCAB = 97
CPU = torch.device("cpu")
ON_CPU = Placement.on(CPU)


def step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    mini_batch_size: int,
    *,
    placement: Placement = ON_CPU,
    pack_len: int | None = None,
) -> StepResult:
    """train_step on `samples` split into mini-batches of `mini_batch_size` (clip 1.0)."""
    mini_batches = prepare_mini_batches(samples, mini_batch_size, pack_len)
    return train_step(
        model, optimizer, samples, mini_batches, lr=None, grad_clip=1.0, placement=placement
    )


def accumulate(
    model: torch.nn.Module,
    samples: list[Sample],
    mini_batch_size: int,
    pack_len: int | None = None,
    placement: Placement = ON_CPU,
) -> None:
    accumulate_gradients(
        model, samples, prepare_mini_batches(samples, mini_batch_size, pack_len), placement
    )


def tiny_model(exp: str = "gpt2ish", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_experiment(exp).build(ModelArgs(**TINY_SIZES, vocab_size=VOCAB))


def ragged_samples(count: int, seed: int) -> list[Sample]:
    """Rows of very different lengths, some with long prompts that carry no loss."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        prompt = tuple(rng.randrange(VOCAB) for _ in range(rng.choice([1, 2, 9, 30])))
        truth_len = rng.randint(1, 65 - len(prompt))
        samples.append(Sample(prompt, tuple(rng.randrange(VOCAB) for _ in range(truth_len))))
    return samples


def random_split_sizes(rng: random.Random, total: int) -> int:
    return rng.randint(1, total)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


PACK_LEN = TINY_SIZES["context_len"]


@pytest.mark.parametrize("pack_len", [None, PACK_LEN], ids=["one-per-row", "packed"])
@pytest.mark.parametrize("exp", ["gpt2ish", "modern"])
@pytest.mark.parametrize("seed", range(4))
def test_accumulated_gradient_equals_full_batch_gradient(
    exp: str, seed: int, pack_len: int | None
) -> None:
    samples = ragged_samples(8, seed)
    reference = tiny_model(exp).double()  # float64, one sample per row: the reference
    accumulate(reference, samples, len(samples))
    expected = gradients(reference)
    scale = max(g.abs().max() for g in expected.values())
    mini_batch = random_split_sizes(random.Random(seed), len(samples))
    for size in {1, 3, mini_batch}:
        model = tiny_model(exp)
        accumulate(model, samples, size, pack_len)
        got = gradients(model)
        worst = max((got[n].double() - expected[n]).abs().max() for n in expected)
        assert worst / scale <= 1e-6, f"mini-batch {size}: relative error {worst / scale:.2e}"


def test_logged_loss_is_the_true_per_token_mean() -> None:
    samples = ragged_samples(6, seed=11)
    model = tiny_model()
    full_loss, _, tokens = evaluate(model, samples, len(samples), CPU, Precision())
    split_loss, _, _ = evaluate(model, samples, 1, CPU, Precision())
    assert tokens == sum(len(s.truth) for s in samples)
    assert split_loss == pytest.approx(full_loss, rel=1e-6)
    # A per-mini-batch average of means would differ on ragged rows: make sure ours does not.
    means = [evaluate(model, [s], 1, CPU, Precision())[0] for s in samples]
    assert abs(sum(means) / len(means) - full_loss) > 1e-4


def run_steps(
    mini_batch_size: int, steps: int = 10, pack_len: int | None = None
) -> dict[str, torch.Tensor]:
    """AdamW at lr 3e-4 (the common small-GPT setting).

    Adam divides each gradient element by its own running scale, so float32 rounding in tiny
    gradient elements shows up in the weights in proportion to the LR: at lr 1e-3 the three
    splits differ by up to ~1.4e-5, at 3e-4 by ~4e-6.
    """
    model = tiny_model(seed=5)
    optimizer, _ = build_optimizer("adamw", model, lr=3e-4, weight_decay=0.01, device=CPU)
    for index in range(steps):
        step(model, optimizer, ragged_samples(8, seed=100 + index), mini_batch_size,
             pack_len=pack_len)  # fmt: skip
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("pack_len", [None, PACK_LEN], ids=["one-per-row", "packed"])
def test_ten_adamw_steps_agree_across_mini_batch_sizes(pack_len: int | None) -> None:
    reference = run_steps(8)  # one sample per row
    for size in (1, 3) if pack_len is None else (1, 3, 8):
        params = run_steps(size, pack_len=pack_len)
        worst = max((params[n] - reference[n]).abs().max() for n in reference)
        assert worst <= 1e-5, f"mini-batch {size}: parameters differ by {worst:.2e}"


def test_one_step_reduces_the_loss_on_a_fixed_batch() -> None:
    model = tiny_model()
    optimizer, _ = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.0, device=CPU)
    samples = ragged_samples(8, seed=3)
    before, _, _ = evaluate(model, samples, 8, CPU, Precision())
    result = step(model, optimizer, samples, 3)
    after, _, _ = evaluate(model, samples, 8, CPU, Precision())
    assert result.loss == pytest.approx(before, rel=1e-5)
    assert after < before - 0.05
    assert result.micro_steps == 3
    assert result.loss_tokens == sum(len(s.truth) for s in samples)


def test_a_non_finite_loss_skips_the_update() -> None:
    model = tiny_model()
    optimizer, _ = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.0, device=CPU)
    with torch.no_grad():
        model.get_parameter(next(n for n, _ in model.named_parameters())).fill_(float("nan"))
    snapshot = copy.deepcopy(model.state_dict())
    result = step(model, optimizer, ragged_samples(4, seed=1), 4)
    assert not torch.isfinite(torch.tensor(result.loss))
    for name, value in model.state_dict().items():
        assert torch.equal(value.nan_to_num(), snapshot[name].nan_to_num())
