"""transformers in and out: folder import, `--exp hf:PATH`, LoRA adapters (tiny models, offline)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli import export as export_cli
from lmplay.cli import generate as generate_cli
from lmplay.cli.trainer import main as trainer_main
from lmplay.data.tokenizer import get_tokenizer
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.hf.experiments import HFCausalLM
from lmplay.models.hf.importing import import_folder
from lmplay.models.lora import LoraSpec, apply_lora
from lmplay.stats.runs import load_stats
from lmplay.train.checkpoint import load_checkpoint, restore_model, save_checkpoint
from lmplay.train.loss import LossModel

PROMPT = "The storm at night"
STEPS = ["--batch-size", "4", "--validation-interval", "1000"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_stage_plan(tmp_path_factory.mktemp("plan"), documents=24)


def train(plan: Path, out: Path, *extra: str) -> int:
    flags = [*TINY_FLAGS, *STEPS, "--training-plan", str(plan), "--out-dir", str(out)]
    return trainer_main([*flags, *extra])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["components"]["model"]["state"]


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def tiny_gpt2_folder(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(folder)  # activation gelu_new, as released GPT-2
    return folder


def tiny_llama_config(**changes: object):
    from transformers import LlamaConfig

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=50257)
    return LlamaConfig(**sizes, intermediate_size=128, max_position_embeddings=64, **changes)


def test_gpt2_folder_imports_trains_and_round_trips_bitwise(plan: Path, tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    folder = tiny_gpt2_folder(tmp_path / "gpt2")
    imported = import_folder(folder)
    assert imported["state_args"]["exp"] == "gpt2ish_tanh"  # tanh GELU, as the folder's config says
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    experiment = get_experiment("gpt2ish_tanh")
    model = experiment.build(experiment.args(**TINY_SIZES))
    model.load_state_dict(imported["state"])
    with torch.no_grad():
        theirs = GPT2LMHeadModel.from_pretrained(folder).eval()(ids).logits
        assert (model.eval().lm_head(model(ids)) - theirs).abs().max().item() <= 1e-4

    hf_exp = get_experiment(f"hf:{folder}")  # the same folder as an hf: experiment
    wrapped = hf_exp.build(hf_exp.args()).eval()
    with torch.no_grad():
        assert torch.equal(wrapped.lm_head(wrapped(ids)), theirs)  # its pretrained weights

    out = tmp_path / "out"
    assert (
        train(
            plan, out, "--exp", "gpt2ish_tanh", "--initial-model", str(folder), "--max-steps", "2"
        )
        == 0
    )
    trained = weights(out / "gpt2ish_tanh.lmp")
    assert not torch.equal(trained["wte.weight"], imported["state"]["wte.weight"])
    assert export_cli.main([str(out / "gpt2ish_tanh.lmp"), str(tmp_path / "exported")]) == 0
    assert_bitwise(import_folder(tmp_path / "exported")["state"], trained)


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


GPT2_JSON = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32, "n_head": 2}


@pytest.mark.parametrize(
    ("flag", "setup", "message"),
    [
        ("--initial-model", lambda d: d, "not a transformers model folder (no config.json)"),
        (
            "--exp",
            lambda d: write_config(d, {"model_type": "bert", "architectures": ["BertForMaskedLM"]}),
            "holds a BertForMaskedLM, not a causal LM",
        ),
        (
            "--exp",
            lambda d: write_config(d, {**GPT2_JSON, "auto_map": {"AutoModelForCausalLM": "m.M"}}),
            "its config needs remote code",
        ),
        ("--initial-model", lambda d: write_config(d, GPT2_JSON), "no weight files"),
        (
            "--exp",
            lambda d: write_config(d, {**GPT2_JSON, "vocab_size": 32000}),
            "smaller than GPT-2 BPE's 50257; lmplay's batcher tokenizes with GPT-2 BPE",
        ),
        (
            "--initial-model",
            lambda d: tiny_llama_config(rms_norm_eps=1e-5).save_pretrained(d),
            "does not map to lmplay's modern (rms_norm_eps 1e-05 (needs 1e-06))",
        ),
    ],
)
def test_unusable_folders_are_refused_with_one_line(
    plan: Path, tmp_path: Path, capsys, flag: str, setup, message: str
) -> None:
    folder = tmp_path / "model"
    if setup(folder) is folder and not folder.exists():
        folder.mkdir()
    exp = ["--exp", f"hf:{folder}"] if flag == "--exp" else ["--initial-model", str(folder)]
    assert train(plan, tmp_path / "out", *exp) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora-rank", "4"], "--lora-rank 4 needs --lora-targets"),
        (["--lora-targets", "qkv"], "--lora-targets and --lora-alpha need --lora-rank"),
        (["--lora-rank", "4", "--lora-targets", "q_proj"], "its Linear layers are: fc, proj, qkv"),
        (["--lora-rank", "4", "--lora-targets", "lm_head"], "the output layer takes no adapters"),
    ],
)
def test_bad_lora_flags_are_refused(plan, tmp_path, capsys, flags, message) -> None:
    assert train(plan, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_exp_list_mentions_hf_folders(capsys) -> None:
    assert trainer_main(["--exp", "list"]) == 0
    assert "hf:PATH" in capsys.readouterr().out


def test_foreign_tokenizer_is_refused_saying_lmplay_uses_gpt2_bpe(plan, tmp_path, capsys) -> None:
    folder = tmp_path / "llama"
    tiny_llama_config().save_pretrained(folder)
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram"}}))
    assert train(plan, tmp_path / "out", "--exp", f"hf:{folder}") == 2
    err = capsys.readouterr().err
    assert "the tokenizer is not GPT-2's BPE" in err and "tokenizes with GPT-2 BPE" in err


def greedy(checkpoint: Path) -> str:
    args = argparse.Namespace(
        prompt=PROMPT, model=checkpoint, max_new_tokens=12, temperature=0.0, top_k=0,
        top_p=1.0, seed=None, device="cpu",
    )  # fmt: skip
    return generate_cli.run(args)


def test_hf_llama_trains_packed_resumes_bitwise_and_generates(plan, tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "tiny-llama"
    tiny_llama_config().save_pretrained(folder)  # config only: transformers' own init
    exp = ["--exp", f"hf:{folder}"]
    assert train(plan, tmp_path / "a", *exp, "--max-steps", "4") == 0
    assert "(short samples packed)" in capsys.readouterr().err
    assert train(plan, tmp_path / "b", *exp, "--max-steps", "2") == 0
    assert train(plan, tmp_path / "b", *exp, "--max-steps", "4") == 0
    assert "resumed from" in capsys.readouterr().err
    a, b = tmp_path / "a" / "hf_tiny-llama.lmp", tmp_path / "b" / "hf_tiny-llama.lmp"
    assert_bitwise(weights(a), weights(b))
    stored = load_checkpoint(a)["components"]["model"]["state_args"]
    assert stored["hf_config"]["model_type"] == "llama"

    shutil.rmtree(folder)  # generation and export rebuild the model from the checkpoint alone
    text = greedy(a)
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)
    assert export_cli.main([str(a), str(tmp_path / "exported")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    new = hf.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.size(1) :].tolist()
    if get_tokenizer().eot_token in new:
        new = new[: new.index(get_tokenizer().eot_token)]
    assert PROMPT + get_tokenizer().decode(new) == text


def test_lora_trains_only_adapters_and_merges_on_export(plan: Path, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    experiment = get_experiment("modern")
    args = experiment.args(**TINY_SIZES)
    torch.manual_seed(0)
    base = experiment.build(args)
    base_path = tmp_path / "base.lmp"
    state_args = {"exp": "modern", "model_args": args.to_dict()}
    save_checkpoint(base_path, {"model": {"state_args": state_args, "state": base.state_dict()}})
    lora = ["--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", "qkv,gate,up"]
    run = ["--exp", "modern", "--initial-model", str(base_path), *lora, "--lr", "1e-2"]
    assert train(plan, tmp_path / "out", *run, "--describe") == 0
    described = capsys.readouterr().err
    adapter_params = 2 * 4 * ((32 + 96) + 2 * (32 + 128))  # blocks x rank x (qkv, gate, up)
    assert f"({adapter_params:,} trainable)" in described
    assert "LoRA rank 4, alpha 8, dropout 0 on qkv, gate, up" in described

    assert train(plan, tmp_path / "out", *run, "--max-steps", "6") == 0
    checkpoint = tmp_path / "out" / "modern.lmp"
    assert train(plan, tmp_path / "out", *run, "--max-steps", "8") == 0  # resumes
    components = load_checkpoint(checkpoint)["components"]
    assert components["model"]["state_args"]["lora"]["targets"] == ["qkv", "gate", "up"]
    groups = components["optimizer"]["state_args"]["groups"]
    assert groups["decay"] == {"tensors": 12, "parameters": adapter_params}
    assert groups["no_decay"]["tensors"] == 0
    trained = components["model"]["state"]
    for key, tensor in base.state_dict().items():
        adapted_key = key.replace(".weight", ".base_layer.weight")
        assert torch.equal(trained.get(adapted_key, trained.get(key)), tensor), key
    losses = [r["loss"] for r in load_stats(tmp_path / "out" / "modern.stats.jsonl").train]
    assert components["runner"]["state"]["step"] == 8 and losses[-1] < losses[0]

    _, _, adapted = restore_model(components["model"], checkpoint)
    assert export_cli.main([str(checkpoint), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    with torch.no_grad():
        ours = adapted.eval().lm_head(adapted(ids))
        assert (merged(ids).logits - ours).abs().max().item() <= 1e-5


def test_lora_on_hf_model_with_activation_checkpointing(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-llama"
    tiny_llama_config().save_pretrained(folder)
    experiment = get_experiment(f"hf:{folder}")
    torch.manual_seed(0)
    model = apply_lora(experiment.build(experiment.args()), LoraSpec(4, 8.0, ("q_proj", "v_proj")))
    ids = torch.randint(0, 50257, (2, 16))
    targets = torch.randint(0, 50257, (2, 16))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss_sum, _ = LossModel(model)(ids, targets)
        loss_sum.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    assert plain and all(".lora_" in name for name in plain)  # base weights get no gradient
    model.train()
    model.enable_activation_checkpointing()
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7)


def test_packing_needs_the_model_to_keep_packed_samples_apart(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "tiny-llama"
    tiny_llama_config().save_pretrained(folder)
    assert get_experiment(f"hf:{folder}").packs_rows

    # A model whose mask lets a row's second sample attend to its first does not pack.
    def causal_only(self, segments: torch.Tensor) -> torch.Tensor:
        T = segments.size(1)
        return torch.ones(T, T, dtype=torch.bool).tril().expand(segments.size(0), 1, T, T)

    monkeypatch.setattr(HFCausalLM, "_packed_mask", causal_only)
    assert not get_experiment(f"hf:{folder}").packs_rows
