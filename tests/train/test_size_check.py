"""The size check counts parameters without building the whole model: any depth is answered at
once, LoRA adapters and transformers configs included, and what cannot fit is refused with exit
2 before a tensor is allocated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lmp_testing import one_stage_plan

from lmplay.cli.trainer import main
from lmplay.models import get_experiment
from lmplay.models.lora import LoraSpec, apply_lora
from lmplay.train.model_setup import parameter_counts


def _real_counts(model: torch.nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.mark.parametrize("exp", ["gpt2ish", "modern"])
@pytest.mark.parametrize("lora", [None, LoraSpec(4, 8.0, ("qkv", "proj"), 0.0)])
def test_extrapolated_counts_equal_the_built_model(exp: str, lora: LoraSpec | None) -> None:
    experiment = get_experiment(exp)
    args = experiment.args(num_blocks=5, embed_dim=32, num_heads=2, context_len=16)
    with torch.device("meta"):
        model = experiment.build(args)
    if lora is not None:
        apply_lora(model, lora)
    assert parameter_counts(experiment, args, False, lora) == _real_counts(model)


@pytest.fixture
def plan_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    one_stage_plan(tmp_path, documents=8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.nn.Module, "to", lambda *a, **k: pytest.fail("allocated"))
    return tmp_path


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(["--training-plan", "plan.json", "--out-dir", "out", "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_a_billion_blocks_are_refused_without_building_them(plan_dir: Path, capsys) -> None:
    err = _refused(["--num-blocks", "1000000000", "--embed-dim", "64", "--num-heads", "2"], capsys)
    assert "choose smaller --num-blocks" in err


def test_lora_adapters_count_toward_the_size_check(plan_dir: Path, capsys) -> None:
    # The adapters alone (rank 4096 on every projection) cannot fit; the model without does.
    sizes = ["--num-blocks", "2000", "--embed-dim", "32", "--num-heads", "2"]
    lora = ["--lora-rank", "65536", "--lora-targets", "qkv,proj"]
    err = _refused([*sizes, *lora], capsys)
    assert "parameters" in err and "GiB available" in err


def test_a_transformers_config_far_too_deep_is_refused_at_once(plan_dir: Path, capsys) -> None:
    folder = plan_dir / "deep"
    folder.mkdir()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 50_000_000,
        "max_position_embeddings": 64,
        "vocab_size": 50257,
    }
    (folder / "config.json").write_text(json.dumps(config))
    err = _refused(["--exp", f"hf:{folder}"], capsys)
    assert "parameters" in err and "GiB available" in err
