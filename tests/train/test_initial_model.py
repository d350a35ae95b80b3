"""A run from --initial-model is a new run: steps, --max-steps, schedule and stats from 0.

The source's step is provenance in the stats meta; its optimizer state is taken only with
--initial-model-optimizer and exactly matching parameters; the docs' LoRA command works on a
trained checkpoint and on a transformers folder; both routes into a transformers folder keep
its dropout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lmp_testing import one_stage_plan, train_in_process

from lmplay.stats.runs import load_stats
from lmplay.train.checkpoint import load_checkpoint

SIZES = ["--num-blocks", "1", "--embed-dim", "32", "--num-heads", "2", "--context-len", "32"]
STEPS = ["--batch-size", "4", "--validation-interval", "1000", "--save-interval", "100000"]
SMALL = [*STEPS, "--validation-samples", "4", "--device", "cpu", "--optimizer-warmup-steps", "4"]
LORA = ["--lora-rank", "8", "--lora-alpha", "16", "--lora-targets", "qkv,gate,up"]


def readme_lora_command() -> list[str]:
    """The LoRA command of docs/hugging-face.md, as flags (its paths are replaced by the test's)."""
    page = (Path(__file__).parents[2] / "docs" / "hugging-face.md").read_text(encoding="utf-8")
    (line,) = [ln for ln in page.splitlines() if ln.startswith("lmp_trainer") and "--lora" in ln]
    return line.split()[1:]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A modern model trained 4 steps: a checkpoint with optimizer, plan progress and stats."""
    folder = tmp_path_factory.mktemp("base")
    one_stage_plan(folder, documents=24)
    code, err = train_in_process(folder, base_flags(folder, "--max-steps", "4"))
    assert code == 0, err
    return folder


def base_flags(folder: Path, *extra: str) -> list[str]:
    plan = ["--training-plan", str(folder / "plan.json"), "--exp", "modern"]
    return [*SIZES, *SMALL, *plan, "--out-dir", str(folder / "out"), *extra]


def test_max_steps_counts_from_zero_on_a_new_run(base: Path, tmp_path: Path) -> None:
    source = base / "out" / "modern.lmp"
    new = tmp_path / "fine.lmp"
    flags = ["--initial-model", str(source), "--model", str(new), "--max-steps", "6"]
    code, err = train_in_process(base, base_flags(base, *flags))
    assert code == 0, err
    assert f"started from {source} (trained there for 4 steps)" in err
    assert "resumed from" not in err
    fresh = [line for line in err.splitlines() if "optimizer" in line and "fresh" in line]
    assert len(fresh) == 1 and "--initial-model-optimizer" in fresh[0]
    assert not [line for line in err.splitlines() if re.search(r"\.py:\d+", line)]
    assert "warning" not in err.lower()
    components = load_checkpoint(new)["components"]
    assert components["runner"]["state"]["step"] == 6
    bars = [part for part in re.split(r"[\r\n]", err) if part.startswith("stage 1/1")]
    assert "100%|" in bars[-1] and "step=6/6" in bars[-1]  # --max-steps is the budget that binds
    assert "lr=" in bars[-1] and "loss=" in bars[-1] and "tok_s=" in bars[-1]
    stats = load_stats(tmp_path / "fine.stats.jsonl")  # beside its checkpoint
    assert [r["steps"] for r in stats.train] == [1, 2, 3, 4, 5, 6]
    assert stats.train[0]["lr"] < stats.train[-1]["lr"]  # warmup started again at step 0
    assert stats.meta["initial_model"] == {"path": str(source), "step": 4}
    assert all(records[0]["steps"] == 0 for records in stats.validation.values())

    code, err = train_in_process(base, base_flags(base, *flags[:-1], "8"))  # the same command
    assert code == 0, err
    assert f"resumed from {new} at step 6" in err
    stats = load_stats(tmp_path / "fine.stats.jsonl")  # beside its checkpoint
    assert [r["steps"] for r in stats.train] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert stats.meta["initial_model"] == {"path": str(source), "step": 4}


def test_initial_model_optimizer_is_taken_only_when_parameters_match(
    base: Path, tmp_path: Path
) -> None:
    source = base / "out" / "modern.lmp"
    start = ["--initial-model", str(source), "--model", str(tmp_path / "a.lmp")]
    keep = [*start, "--initial-model-optimizer", "--describe"]
    code, err = train_in_process(base, base_flags(base, *keep))
    assert code == 0, err
    assert "fresh optimizer" not in err
    code, err = train_in_process(base, base_flags(base, *keep, *LORA))
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "fresh optimizer" in line]
    assert "parameters of --initial-model differ" in line


def test_readme_lora_command_on_a_trained_checkpoint(base: Path, tmp_path: Path) -> None:
    command = readme_lora_command()
    source, target = Path(command[command.index("--initial-model") + 1]), tmp_path / "lora.lmp"
    flags = [str(base / "out" / source.name) if a == str(source) else a for a in command]
    flags = [str(target) if a.endswith("-lora.lmp") else a for a in flags]
    code, err = train_in_process(base, base_flags(base, *flags, "--max-steps", "2"))
    assert code == 0, err
    saved = load_checkpoint(target)["components"]
    assert saved["runner"]["state"]["step"] == 2
    assert saved["model"]["state_args"]["lora"]["rank"] == 8
    before = load_checkpoint(base / "out" / "modern.lmp")["components"]["model"]["state"]
    after = saved["model"]["state"]
    for key, tensor in before.items():  # only the adapters trained
        assert torch.equal(
            after.get(key.replace(".weight", ".base_layer.weight"), after.get(key)), tensor
        )


def tiny_gpt2_folder(folder: Path, dropout: float) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=64, resid_pdrop=dropout,
        embd_pdrop=dropout, attn_pdrop=dropout, activation_function="gelu_pytorch_tanh",
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_both_import_routes_keep_the_folders_dropout(base: Path, tmp_path: Path) -> None:
    folder = tiny_gpt2_folder(tmp_path / "gpt2", dropout=0.2)
    small = [*SMALL, "--training-plan", str(base / "plan.json"), "--max-steps", "1", "--no-packing"]
    routes = {
        "hf": ["--exp", f"hf:{folder}"],
        "import": ["--exp", "gpt2ish_tanh", "--initial-model", str(folder)],
        "import_no_dropout": ["--exp", "gpt2ish_tanh", "--initial-model", str(folder)],
    }
    losses = {}
    for name, route in routes.items():
        extra = ["--dropout", "0"] if name.endswith("no_dropout") else []
        flags = [*small, *route, *extra, "--out-dir", str(tmp_path / name)]
        code, err = train_in_process(base, flags)
        assert code == 0, err
        checkpoint = next((tmp_path / name).glob("*.lmp"))
        args = load_checkpoint(checkpoint)["components"]["model"]["state_args"]["model_args"]
        assert args["dropout"] == (0.0 if extra else 0.2)
        (record,) = load_stats(next((tmp_path / name).glob("*.stats.jsonl"))).train
        losses[name] = record["loss"]
    assert losses["hf"] == pytest.approx(losses["import"], abs=1e-5)
    assert abs(losses["import"] - losses["import_no_dropout"]) > 1e-3


def test_readme_lora_command_on_a_transformers_folder(base: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50257)
    config = LlamaConfig(
        **sizes, intermediate_size=128, max_position_embeddings=64, rms_norm_eps=1e-6
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    command = readme_lora_command()
    source = command[command.index("--initial-model") + 1]
    flags = [str(tmp_path / "llama") if a == source else a for a in command]
    flags = [str(tmp_path / "lora.lmp") if a.endswith("-lora.lmp") else a for a in flags]
    small = [*SMALL, "--training-plan", str(base / "plan.json")]
    code, err = train_in_process(base, [*small, *flags, "--max-steps", "1"])
    assert code == 0, err
    assert load_checkpoint(tmp_path / "lora.lmp")["components"]["runner"]["state"]["step"] == 1
