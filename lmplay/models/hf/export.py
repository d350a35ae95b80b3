"""Write a model as a transformers folder: config, safetensors weights, generation config and
GPT-2 tokenizer files, which `AutoModelForCausalLM` and `AutoTokenizer` load offline.

lmplay's own families go through `maps` (refused when no transformers class computes the
same function); an `hf:` model is its transformers model already. LoRA adapters are merged
into the base weights first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmplay.models.hf.experiments import HFCausalLM
from lmplay.models.hf.maps import EOT_ID, family_of, to_hf_state
from lmplay.models.hf.tokenizer import write_gpt2_tokenizer
from lmplay.models.lora import merge_lora
from lmplay.models.registry import ModelArgs

WEIGHTS_FILE = "model.safetensors"


def hf_config_and_state(model: nn.Module, exp: str) -> tuple[Any, dict[str, Tensor]]:
    """(transformers config, its state dict) of `model`; LoRA adapters merged."""
    model = merge_lora(model)
    if isinstance(model, HFCausalLM):
        hf = model.hf
        state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
        # safetensors stores each tensor once: leave out what transformers ties on load
        tied = _tied_keys(hf)
        return hf.config, {k: v for k, v in state.items() if k not in tied}
    family = family_of(model, exp)
    config = family.config(model.args)
    state = to_hf_state(model, family)
    _check_against_transformers(config, state)
    return config, state


def _tied_keys(hf: nn.Module) -> set[str]:
    """Names of tensors that share storage with an earlier tensor of the state dict."""
    seen: dict[int, str] = {}
    tied = set()
    for key, tensor in hf.state_dict().items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            tied.add(key)
        else:
            seen[ptr] = key
    return tied


def _check_against_transformers(config: Any, state: dict[str, Tensor]) -> None:
    """Every tensor the transformers class expects is written, at its shape (else a bug here)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        expected = AutoModelForCausalLM.from_config(config).state_dict()
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    wanted = {k: v.shape for k, v in expected.items() if k not in tied}
    got = {k: v.shape for k, v in state.items()}
    if wanted != got:
        raise RuntimeError(f"weight map does not fit {type(config).__name__}: {wanted} vs {got}")


def write_hf_folder(model: nn.Module, exp: str, args: ModelArgs, folder: Path) -> None:
    """Write the transformers folder of `model` into the existing empty `folder`."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    config, state = hf_config_and_state(model, exp)
    config.save_pretrained(folder)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, folder / WEIGHTS_FILE, {"format": "pt"}
    )
    generation = GenerationConfig(bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID)
    generation.save_pretrained(folder)
    write_gpt2_tokenizer(folder, args.context_len)
