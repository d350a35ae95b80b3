"""`--exp hf:PATH`: any transformers causal LM in a local folder, trained through lmplay's plan.

`HFCausalLM` wraps the transformers model in lmplay's model contract: forward returns the base
model's final hidden states, `lm_head` is the model's output Linear, `args` hold the sizes the
batcher and generator read. The folder is read once, when a run starts: the checkpoint keeps
the config (`state_args["hf_config"]`), so resuming and `lmp_generator` rebuild the model
without the folder. Weights in the folder are loaded at a fresh start; without weights the
model starts from transformers' own initialization (seeded by --seed).

Rows are packed with several samples only when the model gives a packed row (per-sample
position ids and a 4D mask) the same hidden states as its samples run alone; `build` checks
that on a short probe, and otherwise every sample gets its own row.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmplay.errors import UsageError
from lmplay.models.hf.folder import (
    DROPOUT_KEYS,
    HFFolder,
    config_dropout,
    config_from_dict,
    config_to_dict,
    read_folder,
    set_config_dropout,
)
from lmplay.models.modules import KVCache, segment_mask, start_position
from lmplay.models.registry import SIZE_KEYS, Experiment, ModelArgs, check_model_contract

HF_PREFIX = "hf:"
HF_EXP_HELP = (
    "hf:PATH  any transformers causal LM in a local folder (config.json, weights optional)"
)
# Configs whose logits are more than lm_head(hidden states): the chunked loss would skip it.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def is_hf_exp(name: str) -> bool:
    return name.startswith(HF_PREFIX)


class HFCausalLM(nn.Module):
    """A transformers causal LM behind lmplay's model contract (hidden states out, `lm_head`)."""

    def __init__(self, args: ModelArgs, hf_model: nn.Module) -> None:
        super().__init__()
        self.args = args
        self.hf = hf_model
        forward = inspect.signature(self.hf.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"

    @property
    def lm_head(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    def enable_activation_checkpointing(self) -> None:
        """Recompute each layer's activations in backward (transformers' checkpointing).

        The non-reentrant variant needs no input that requires grad, so it also works when only
        LoRA adapters train and the embeddings are frozen.
        """
        kwargs = {"use_reentrant": False}
        enable = getattr(self.hf, "activation_checkpointing_enable", None)  # newer transformers
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def forward(
        self,
        input_ids: Tensor,
        kv_cache: KVCache | None = None,
        positions: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor:
        T = input_ids.size(1)
        kwargs: dict[str, Any] = {"use_cache": kv_cache is not None}
        if segments is not None:
            if kv_cache is not None or positions is None:
                raise ValueError("packed rows need positions and cannot use a KV cache")
            kwargs.update(position_ids=positions, attention_mask=self._packed_mask(segments))
        start = start_position(T, kv_cache, self.args.context_len)
        if kv_cache is not None:
            from transformers import DynamicCache

            if kv_cache.external is None:
                kv_cache.external = DynamicCache(config=self.hf.config)
            kwargs[self._cache_kwarg] = kv_cache.external
            position_ids = torch.arange(start, start + T, device=input_ids.device)
            kwargs["position_ids"] = position_ids.unsqueeze(0).expand(input_ids.size(0), T)
        hidden = self.hf.base_model(input_ids=input_ids, **kwargs).last_hidden_state
        if kv_cache is not None:
            kv_cache.advance(T)
        return hidden  # (B, T, C): the loss applies lm_head in chunks

    def _packed_mask(self, segments: Tensor) -> Tensor:
        mask = segment_mask(segments)  # (B, 1, T, T) bool, True where attention is allowed
        if self.hf.config._attn_implementation == "sdpa":
            return mask
        # eager attention adds the mask to the scores
        dtype = self.hf.dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )


def _probe_packing(model: HFCausalLM) -> bool:
    """Whether a packed row of two samples gives the hidden states of each sample alone."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(model.args.vocab_size, 1000), (1, 7), generator=generator)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(ids, positions=positions, segments=segments)
            alone = torch.cat([model(ids[:, :4]), model(ids[:, 4:])], dim=1)
        return bool(torch.allclose(packed, alone, atol=1e-4, rtol=1e-4))
    except Exception:  # a model that rejects 4D masks or position ids trains one sample per row
        return False
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class HFExperiment(Experiment):
    """`--exp hf:PATH`: sizes come from the config; flags may only shorten the context."""

    hf_config: dict[str, Any] = field(default_factory=dict)
    folder: HFFolder | None = None  # None: rebuilt from a checkpoint's copy of the config
    _probe: dict[str, bool] = field(default_factory=dict, compare=False)

    def config(self) -> Any:
        return config_from_dict(self.hf_config)

    def state_args(self) -> dict[str, Any]:
        return {"hf_config": self.hf_config}

    def args(self, **overrides: int | float | None) -> ModelArgs:
        config = self.config()
        sizes = {
            "num_blocks": getattr(config, "num_hidden_layers", None),
            "embed_dim": getattr(config, "hidden_size", None),
            "num_heads": getattr(config, "num_attention_heads", None),
            "context_len": getattr(config, "max_position_embeddings", None),
        }
        for key in SIZE_KEYS:
            value = overrides.get(key)
            if value is None or value == sizes[key]:
                continue
            flag = "--" + key.replace("_", "-")
            if key == "context_len" and sizes[key] is not None and value < sizes[key]:
                sizes[key] = value  # shorter samples than the model could take
                continue
            raise UsageError(
                f"{flag} {value}: {self.name}'s size comes from its config.json ({sizes[key]}); "
                + ("only a shorter context is allowed" if key == "context_len" else "drop it")
            )
        if sizes["context_len"] is None:
            raise UsageError(
                f"{self.name}: its config has no max_position_embeddings; pass --context-len"
            )
        return ModelArgs(**sizes, vocab_size=config.vocab_size, dropout=config_dropout(config))

    @property
    def packs_rows(self) -> bool:
        if "packs" not in self._probe:
            self.build(self.args())
        return self._probe["packs"]

    def build(self, args: ModelArgs) -> nn.Module:
        from transformers import AutoModelForCausalLM

        config = self.config()
        # --dropout given: it replaces the config's
        if args.dropout != config_dropout(config) and not set_config_dropout(config, args.dropout):
            raise UsageError(
                f"--dropout {args.dropout}: {self.name}'s config has no dropout setting "
                f"({', '.join(DROPOUT_KEYS[:4])}, ...); drop the flag"
            )
        dtype = {"dtype": torch.float32}
        if self.folder is not None and self.folder.weight_files:
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(self.folder.path), config=config, local_files_only=True, **dtype
            )
        else:
            hf_model = AutoModelForCausalLM.from_config(config, **dtype)
        model = HFCausalLM(args, hf_model.float())
        check_model_contract(model)
        if "packs" not in self._probe:
            self._probe["packs"] = _probe_packing(model)
        return model

    def build_meta(self, args: ModelArgs) -> nn.Module:
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            return HFCausalLM(args, AutoModelForCausalLM.from_config(self.config()))

    def build_meta_depth(self, args: ModelArgs, blocks: int) -> nn.Module:
        from transformers import AutoModelForCausalLM

        raw = {**self.hf_config, "num_hidden_layers": blocks}
        if isinstance(raw.get("layer_types"), list):  # per-layer kinds (sliding, full, ...)
            raw["layer_types"] = raw["layer_types"][:blocks]
        with torch.device("meta"):
            shallow = AutoModelForCausalLM.from_config(config_from_dict(raw))
            return HFCausalLM(dataclasses.replace(args, num_blocks=blocks), shallow)


def hf_experiment(name: str, stored_state_args: dict[str, Any] | None = None) -> HFExperiment:
    """The `hf:PATH` experiment: from a checkpoint's stored config, else from the folder."""
    stored = (stored_state_args or {}).get("hf_config")
    folder = None
    if isinstance(stored, dict):
        raw = stored
    else:
        folder = read_folder(Path(name[len(HF_PREFIX) :]), "--exp")
        raw = config_to_dict(folder.config)
    for key in _LOGIT_TRANSFORMS:
        if raw.get(key) not in (None, 1, 1.0):
            raise UsageError(
                f"--exp {name}: its logits are transformed ({key} {raw[key]}), which lmplay's "
                "chunked loss (lm_head of the hidden states) does not apply"
            )
    weights = "pretrained weights" if folder and folder.weight_files else "fresh weights"
    description = f"transformers {raw.get('model_type')} from {name[len(HF_PREFIX) :]} ({weights})"
    return HFExperiment(name, description, HFCausalLM, {}, hf_config=raw, folder=folder)
