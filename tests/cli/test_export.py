"""lmp_export: tiny trained checkpoints become transformers folders that compute the same thing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli import export as export_cli
from lmplay.cli import generate as generate_cli
from lmplay.cli.trainer import main as trainer_main
from lmplay.data.tokenizer import get_tokenizer
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.train.checkpoint import load_checkpoint, restore_model, save_checkpoint

PROMPT = "The king and the queen"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plan")
    return one_stage_plan(folder, documents=24)


def train_tiny(plan: Path, out: Path, exp: str, *extra: str) -> Path:
    flags = [*TINY_FLAGS, "--exp", exp, "--training-plan", str(plan), "--out-dir", str(out)]
    steps = ["--max-steps", "2", "--batch-size", "4", "--validation-interval", "1000"]
    assert trainer_main([*flags, *steps, *extra]) == 0
    return out / f"{exp}.lmp"


def lmplay_logits(checkpoint: Path, ids: torch.Tensor) -> torch.Tensor:
    _, _, model = restore_model(load_checkpoint(checkpoint)["components"]["model"], checkpoint)
    with torch.no_grad():
        return model.eval().lm_head(model(ids))


def lmp_generator_text(checkpoint: Path, tokens: int) -> str:
    args = argparse.Namespace(
        prompt=PROMPT, model=checkpoint, max_new_tokens=tokens, temperature=0.0, top_k=0,
        top_p=1.0, seed=None, device="cpu",
    )  # fmt: skip
    return generate_cli.run(args)


def transformers_text(folder: Path, tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids[0].tolist() == get_tokenizer().encode(PROMPT)
    out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    new = [t for t in out[0, ids.size(1) :].tolist()]
    if tokenizer.eos_token_id in new:  # lmp_generator stops at end-of-text and drops it
        new = new[: new.index(tokenizer.eos_token_id)]
    return PROMPT + tokenizer.decode(new)


@pytest.mark.parametrize(
    ("exp", "hf_class"), [("gpt2ish", "GPT2LMHeadModel"), ("modern", "LlamaForCausalLM")]
)
def test_export_loads_in_transformers_with_equal_logits_and_greedy_text(
    plan: Path, tmp_path: Path, exp: str, hf_class: str
) -> None:
    from transformers import AutoModelForCausalLM

    checkpoint = train_tiny(plan, tmp_path / "out", exp)
    folder = tmp_path / "exported"
    assert export_cli.main([str(checkpoint), str(folder)]) == 0
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= names
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= names

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == hf_class
    ids = torch.tensor([get_tokenizer().encode(PROMPT + " and the storm at night")])
    with torch.no_grad():
        theirs = hf(ids).logits
    ours = lmplay_logits(checkpoint, ids)
    assert (theirs - ours).abs().max().item() <= 1e-4
    assert transformers_text(folder, 24) == lmp_generator_text(checkpoint, 24)


def write_untrained(path: Path, exp: str) -> Path:
    experiment = get_experiment(exp)
    args = experiment.args(**TINY_SIZES)
    state_args = {"exp": exp, "model_args": args.to_dict()}
    model = experiment.build(args)
    save_checkpoint(path, {"model": {"state_args": state_args, "state": model.state_dict()}})
    return path


def test_architecture_without_mapping_is_refused_by_name(tmp_path: Path, capsys) -> None:
    checkpoint = write_untrained(tmp_path / "resscale.lmp", "resscale")
    assert export_cli.main([str(checkpoint), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--exp resscale does not map to transformers" in err
    assert "blocks.0.attn_scale.gain" in err and "LlamaForCausalLM" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resscale.lmp"]


def test_existing_folder_with_files_is_not_overwritten(tmp_path: Path, capsys) -> None:
    checkpoint = write_untrained(tmp_path / "gpt2ish.lmp", "gpt2ish")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_cli.main([str(checkpoint), str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
