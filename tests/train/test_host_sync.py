"""The step reads device values once: loss sum, correct count and gradient norm together."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_step import CPU, ragged_samples, step, tiny_model

import lmplay
from lmplay.train.optim import build_optimizer
from lmplay.train.placement import Placement
from lmplay.train.step import StepResult, prepare_mini_batches, train_step

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy")


@pytest.fixture
def device_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every conversion of a tensor to a Python value, by method name."""
    calls: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def sgd_step(mini_batch_size: int) -> StepResult:
    model = tiny_model()
    # SGD: AdamW reads its step counter with .item() (a CPU tensor, so no device sync anyway).
    optimizer, _ = build_optimizer("sgd", model, lr=1e-2, weight_decay=0.0, device=CPU)
    return step(model, optimizer, ragged_samples(8, seed=4), mini_batch_size)


def test_a_step_of_several_mini_batches_reads_the_device_once(device_reads: list[str]) -> None:
    result = sgd_step(mini_batch_size=3)
    assert result.micro_steps == 3
    assert device_reads == ["tolist"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_syncs_only_to_read_its_result() -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = tiny_model().to(cuda)
    optimizer, _ = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.0, device=cuda)
    samples = ragged_samples(8, seed=4)
    placement = Placement.on(cuda)
    step(model, optimizer, samples, 3, placement=placement)  # warm-up: lazy state, allocator
    mini_batches = prepare_mini_batches(samples, 3, pin=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_step(model, optimizer, samples, mini_batches, lr=1e-3, grad_clip=1.0,
                       placement=placement)  # fmt: skip
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # Kernels may synchronize inside torch (embedding backward does on some versions); what
    # lmplay's own code asks for is one read per step, in step.py.
    package = Path(lmplay.__file__).resolve().parent
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    ours = [w for w in syncs if package in Path(w.filename).resolve().parents]
    assert [Path(w.filename).name for w in ours] == ["step.py"], [str(w.message) for w in ours]
