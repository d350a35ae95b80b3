"""Mixed precision and torch.compile: run on the CPU here, on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch
from lmp_testing import TINY_FLAGS, cli_in_process, evaluate, one_stage_plan
from test_step import ragged_samples, step

from lmplay.config import SystemConfig
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.registry import ModelArgs
from lmplay.train.optim import build_optimizer
from lmplay.train.placement import Placement, Precision, resolve_precision

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny_model(exp: str = "gpt2ish") -> torch.nn.Module:
    torch.manual_seed(0)
    return get_experiment(exp).build(ModelArgs(**TINY_SIZES, vocab_size=97))


def test_amp_on_cpu_resolves_to_bf16_without_a_scaler() -> None:
    precision = resolve_precision(SystemConfig(amp=True), CPU)
    assert precision.dtype == torch.bfloat16 and precision.scaler is None
    assert resolve_precision(SystemConfig(), CPU).dtype is None


@pytest.mark.slow
@pytest.mark.parametrize("pack_len", [None, TINY_SIZES["context_len"]], ids=["plain", "packed"])
@pytest.mark.parametrize("exp", ["gpt2ish", "modern"])
def test_bf16_autocast_step_on_cpu_tracks_fp32(exp: str, pack_len: int | None) -> None:
    samples = ragged_samples(8, seed=4)
    results = {}
    for name, precision in {"fp32": Precision(), "bf16": Precision("cpu", torch.bfloat16)}.items():
        model = tiny_model(exp)
        optimizer, _ = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.0, device=CPU)
        placement = Placement(CPU, precision=precision)
        first = step(model, optimizer, samples, 3, placement=placement, pack_len=pack_len)
        after, _, _ = evaluate(model, samples, 8, CPU, Precision())
        results[name] = (first.loss, after)
    assert results["bf16"][0] == pytest.approx(results["fp32"][0], rel=2e-2)
    assert results["bf16"][1] < results["bf16"][0]  # bf16 training still lowers the loss


@pytest.mark.slow
def test_compiled_model_matches_eager_and_checkpoints_hold_plain_weights(tmp_path) -> None:
    one_stage_plan(tmp_path, documents=12)
    args = ["--training-plan", "plan.json", "--out-dir", "out", *TINY_FLAGS, "--max-steps", "2"]
    compiled = cli_in_process("trainer", [*args, "--compile-model", "--model", "out/c.lmp"],
                              tmp_path)  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    eager = cli_in_process("trainer", [*args, "--model", "out/e.lmp"], tmp_path)
    assert eager.returncode == 0, eager.stderr[-2000:]
    c = torch.load(tmp_path / "out/c.lmp", weights_only=True)["components"]["model"]["state"]
    e = torch.load(tmp_path / "out/e.lmp", weights_only=True)["components"]["model"]["state"]
    assert c.keys() == e.keys()
    assert not any(key.startswith("_orig_mod") for key in c)
    for key in c:
        torch.testing.assert_close(c[key], e[key], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_amp_and_fused_adamw_step() -> None:
    device = torch.device("cuda")
    model = tiny_model().to(device)
    optimizer, _ = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.0, device=device)
    assert optimizer.defaults.get("fused") is True
    placement = Placement(device, precision=resolve_precision(SystemConfig(amp=True), device))
    result = step(model, optimizer, ragged_samples(8, seed=1), 4, placement=placement,
                  pack_len=TINY_SIZES["context_len"])  # fmt: skip
    assert torch.isfinite(torch.tensor(result.loss))


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_uses_a_grad_scaler() -> None:
    device = torch.device("cuda")
    precision = resolve_precision(SystemConfig(amp=True, amp_dtype="fp16"), device)
    assert precision.dtype == torch.float16 and precision.scaler is not None
    model = tiny_model().to(device)
    optimizer, _ = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.0, device=device)
    placement = Placement(device, precision=precision)
    result = step(model, optimizer, ragged_samples(8, seed=2), 4, placement=placement)
    assert torch.isfinite(torch.tensor(result.loss))
