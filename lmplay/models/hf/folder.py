"""Reading a local transformers model folder, refusing what lmplay cannot train faithfully.

A folder must hold a `config.json` of a causal LM that transformers knows without remote code,
every weight shard its index names, and GPT-2's BPE
tokenizer or none, since lmplay's batcher tokenizes with GPT-2 BPE. Each refusal is one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmplay.data.tokenizer import VOCAB_SIZE
from lmplay.errors import UsageError
from lmplay.models.hf.tokenizer import folder_tokenizer_problem

# Single-file and sharded weights, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
GPT2_BPE = "lmplay's batcher tokenizes with GPT-2 BPE, so the model must use GPT-2's tokenizer"


@dataclass(frozen=True)
class HFFolder:
    path: Path
    config: Any  # a transformers PretrainedConfig
    weight_files: tuple[Path, ...]  # empty: config only


def read_folder(path: Path, flag: str) -> HFFolder:
    """The folder's config and weight files, or a UsageError saying why lmplay cannot use it."""
    where = f"{flag} {path}"
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{where}: not a transformers model folder (no config.json)")
    try:
        raw = json.loads(config_path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{where}: config.json is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: config.json does not hold an object")
    if raw.get("auto_map"):
        raise UsageError(
            f"{where}: its config needs remote code (auto_map {sorted(raw['auto_map'])}); "
            "lmplay never runs trust_remote_code"
        )
    config = _causal_lm_config(raw, where)
    weights = _weight_files(path, where)
    problem = folder_tokenizer_problem(path)
    if problem is not None:
        raise UsageError(f"{where}: the tokenizer is not GPT-2's BPE: {problem}; {GPT2_BPE}")
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int) or vocab < VOCAB_SIZE:
        raise UsageError(
            f"{where}: its vocabulary of {vocab} tokens is smaller than GPT-2 BPE's "
            f"{VOCAB_SIZE}; {GPT2_BPE}"
        )
    return HFFolder(path, config, weights)


def _causal_lm_config(raw: dict[str, Any], where: str) -> Any:
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UsageError(f"{where}: model_type {model_type!r} is not known to transformers")
    architectures = raw.get("architectures") or []
    causal = [a for a in architectures if a.endswith(("ForCausalLM", "LMHeadModel"))]
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (architectures and not causal):
        kind = architectures[0] if architectures else model_type
        raise UsageError(
            f"{where}: holds a {kind}, not a causal LM (AutoModelForCausalLM cannot load it)"
        )
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Any:
    """A transformers config from its dict (config.json's content, or a checkpoint's copy)."""
    from transformers import CONFIG_MAPPING

    values = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version")}
    return CONFIG_MAPPING[raw["model_type"]].from_dict(values)


# Where transformers configs keep dropout probabilities (GPT-2's three, Llama's one, others').
DROPOUT_KEYS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "hidden_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "embed_dropout",
    "dropout",
)


def config_dropout(config: Any) -> float:
    """The config's dropout as one probability: the largest of its dropout settings (0 if none).

    lmplay's models use one probability everywhere; GPT-2 configs hold the same value three
    times, so nothing is lost for them.
    """
    values = [getattr(config, key, None) for key in DROPOUT_KEYS]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(numbers, default=0.0)


def set_config_dropout(config: Any, dropout: float) -> int:
    """Every dropout setting the config has becomes `dropout` (--dropout given for hf:PATH);
    returns how many settings there were."""
    count = 0
    for key in DROPOUT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(config, key, dropout)
            count += 1
    return count


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON values only, so a checkpoint stays loadable with weights_only=True."""
    return json.loads(config.to_json_string(use_diff=False))


def _weight_files(path: Path, where: str) -> tuple[Path, ...]:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return (path / name,)
    for name in INDEX_FILES:
        index = path / name
        if not index.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"{where}: {name} has no readable weight_map") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise UsageError(f"{where}: missing weight files named in {name}: {missing[:3]}")
        return tuple(path / s for s in shards)
    return ()


def load_weights(files: tuple[Path, ...]) -> dict[str, Tensor]:
    """Every tensor of the weight files, on the CPU."""
    state: dict[str, Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(file)))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state
