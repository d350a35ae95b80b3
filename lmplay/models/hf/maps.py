"""Faithful maps between lmplay's families and transformers classes: configs and weights.

`gpt2ish` and `gpt2ish_tanh` are GPT2LMHeadModel with the exact or the tanh GELU; `modern` and
`modern_tied` are LlamaForCausalLM with an untied or tied head. Every other architecture, and a
transformers config these classes do not compute exactly, is refused with a message naming what
does not map. Weights move by copy, transpose (GPT-2's Conv1D stores (in, out)) and split or
concatenation (lmplay's fused qkv), so a round trip is bitwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmplay.errors import UsageError
from lmplay.models.gpt2ish import GPT2ish
from lmplay.models.gpt2ish_tanh import GPT2ishTanh
from lmplay.models.hf.folder import config_dropout
from lmplay.models.modern import Modern, ModernTied
from lmplay.models.modules import swiglu_hidden
from lmplay.models.registry import ModelArgs

EOT_ID = 50256
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which gpt2ish uses
RMS_NORM_EPS = 1e-6  # lmplay's RMSNorm
ROPE_THETA = 10000.0  # lmplay's rotary_tables
GELU_ACTIVATIONS = {
    "gelu": "gpt2ish",
    "gelu_new": "gpt2ish_tanh",
    "gelu_pytorch_tanh": "gpt2ish_tanh",
}


@dataclass(frozen=True)
class Rule:
    """One lmplay tensor and the transformers tensor(s) holding it.

    Several `hf` names split the lmplay tensor along dim 0 in that order; `transpose` is for
    Conv1D weights, which store (in, out) where nn.Linear stores (out, in).
    """

    lmplay: str
    hf: tuple[str, ...]
    transpose: bool = False


def _gpt2_rules(args: ModelArgs) -> list[Rule]:
    rules = [Rule("wte.weight", ("transformer.wte.weight",))]
    rules.append(Rule("wpe.weight", ("transformer.wpe.weight",)))
    for i in range(args.num_blocks):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                rules.append(Rule(f"{ours}{norm}.{p}", (f"{theirs}{norm}.{p}",)))
        for mine, hf in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj")):
            rules.append(Rule(f"{ours}{mine}.weight", (f"{theirs}{hf}.weight",), transpose=True))
            rules.append(Rule(f"{ours}{mine}.bias", (f"{theirs}{hf}.bias",)))
        for mine, hf in (("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            rules.append(Rule(f"{ours}{mine}.weight", (f"{theirs}{hf}.weight",), transpose=True))
            rules.append(Rule(f"{ours}{mine}.bias", (f"{theirs}{hf}.bias",)))
    rules += [Rule(f"ln_f.{p}", (f"transformer.ln_f.{p}",)) for p in ("weight", "bias")]
    return rules


def _llama_rules(args: ModelArgs, tied: bool) -> list[Rule]:
    rules = [Rule("wte.weight", ("model.embed_tokens.weight",))]
    for i in range(args.num_blocks):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        qkv = tuple(f"{theirs}self_attn.{n}_proj.weight" for n in "qkv")
        rules += [
            Rule(f"{ours}attn_norm.weight", (f"{theirs}input_layernorm.weight",)),
            Rule(f"{ours}attn.qkv.weight", qkv),
            Rule(f"{ours}attn.proj.weight", (f"{theirs}self_attn.o_proj.weight",)),
            Rule(f"{ours}mlp_norm.weight", (f"{theirs}post_attention_layernorm.weight",)),
            Rule(f"{ours}mlp.gate.weight", (f"{theirs}mlp.gate_proj.weight",)),
            Rule(f"{ours}mlp.up.weight", (f"{theirs}mlp.up_proj.weight",)),
            Rule(f"{ours}mlp.proj.weight", (f"{theirs}mlp.down_proj.weight",)),
        ]
    rules.append(Rule("norm.weight", ("model.norm.weight",)))
    if not tied:
        rules.append(Rule("lm_head.weight", ("lm_head.weight",)))
    return rules


def _gpt2_config(args: ModelArgs, activation: str) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        architectures=["GPT2LMHeadModel"],
        vocab_size=args.vocab_size,
        n_positions=args.context_len,
        n_embd=args.embed_dim,
        n_layer=args.num_blocks,
        n_head=args.num_heads,
        activation_function=activation,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        layer_norm_epsilon=LAYER_NORM_EPS,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        tie_word_embeddings=True,
    )


def _llama_config(args: ModelArgs, tied: bool) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=args.vocab_size,
        hidden_size=args.embed_dim,
        intermediate_size=swiglu_hidden(args.embed_dim),
        num_hidden_layers=args.num_blocks,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_heads,
        head_dim=args.head_dim,
        hidden_act="silu",
        max_position_embeddings=args.context_len,
        rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        attention_bias=False,
        attention_dropout=args.dropout,
        mlp_bias=False,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        tie_word_embeddings=tied,
    )


@dataclass(frozen=True)
class Family:
    """An lmplay class and the transformers class that computes exactly the same function."""

    hf_class: str
    config: Callable[[ModelArgs], Any]
    rules: Callable[[ModelArgs], list[Rule]]
    tied: bool


FAMILIES: dict[type[nn.Module], Family] = {
    GPT2ish: Family("GPT2LMHeadModel", lambda a: _gpt2_config(a, "gelu"), _gpt2_rules, True),
    GPT2ishTanh: Family(
        "GPT2LMHeadModel", lambda a: _gpt2_config(a, "gelu_pytorch_tanh"), _gpt2_rules, True
    ),
    Modern: Family(
        "LlamaForCausalLM",
        lambda a: _llama_config(a, False),
        lambda a: _llama_rules(a, False),
        False,
    ),
    ModernTied: Family(
        "LlamaForCausalLM", lambda a: _llama_config(a, True), lambda a: _llama_rules(a, True), True
    ),
}


def family_of(model: nn.Module, exp: str) -> Family:
    """The model's exact family, or a UsageError naming what has no transformers counterpart."""
    family = FAMILIES.get(type(model))
    if family is not None:
        return family
    mapped = ", ".join(sorted(c.__name__ for c in FAMILIES))
    nearest = next((c for c in type(model).__mro__ if c in FAMILIES), None)
    if nearest is None:
        raise UsageError(
            f"--exp {exp} ({type(model).__name__}) has no transformers mapping; mapped classes: "
            f"{mapped}"
        )
    nearest_family = FAMILIES[nearest]
    covered = {r.lmplay for r in nearest_family.rules(model.args)} | {"lm_head.weight"}
    extra = [k for k in model.state_dict() if k not in covered]
    what = (
        f"its tensors {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''} have no "
        f"counterpart in {nearest_family.hf_class}"
        if extra
        else f"{type(model).__name__} changes the computation of {nearest.__name__}"
    )
    raise UsageError(f"--exp {exp} does not map to transformers: {what}")


def to_hf_state(model: nn.Module, family: Family) -> dict[str, Tensor]:
    """The transformers state dict (tied heads left out: transformers ties them on load)."""
    state = model.state_dict()
    out: dict[str, Tensor] = {}
    for rule in family.rules(model.args):
        tensor = state[rule.lmplay].detach()
        parts = tensor.chunk(len(rule.hf)) if len(rule.hf) > 1 else (tensor,)
        for name, part in zip(rule.hf, parts, strict=True):
            out[name] = (part.t() if rule.transpose else part).contiguous().clone()
    return out


def from_hf_state(
    hf_state: Mapping[str, Tensor], family: Family, args: ModelArgs, source: str
) -> dict[str, Tensor]:
    """lmplay's state dict from transformers tensors; refuses missing and unknown ones by name."""
    hf_state = {_strip_legacy_prefix(k, family): v for k, v in hf_state.items()}
    rules = family.rules(args)
    wanted = {name for rule in rules for name in rule.hf}
    ignorable = {"lm_head.weight"} if family.tied else set()
    unknown = [k for k in hf_state if k not in wanted | ignorable and not _is_buffer(k)]
    missing = sorted(wanted - set(hf_state))
    if missing or unknown:
        raise UsageError(
            f"{source}: weights do not fit {family.hf_class} at its config's sizes "
            f"(missing {missing[:3]}, unknown {unknown[:3]})"
        )
    state: dict[str, Tensor] = {}
    for rule in rules:
        parts = [hf_state[name].to(torch.float32) for name in rule.hf]
        parts = [p.t() if rule.transpose else p for p in parts]
        state[rule.lmplay] = torch.cat(parts).contiguous() if len(parts) > 1 else parts[0]
    if family.tied:
        state["lm_head.weight"] = state["wte.weight"]
    return state


def _strip_legacy_prefix(key: str, family: Family) -> str:
    # GPT-2 files written by old transformers (the hub's `gpt2`) name the base model's tensors
    # without the `transformer.` prefix.
    if family.hf_class == "GPT2LMHeadModel" and not key.startswith(("transformer.", "lm_head.")):
        return "transformer." + key
    return key


def _is_buffer(key: str) -> bool:
    """Derived tensors some files carry: GPT-2's causal masks, Llama's rotary frequencies."""
    return key.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))


def rope_settings(config: Any) -> tuple[float | None, str]:
    """(theta, rope type) of a Llama-like config, in transformers 4 and 5 spellings."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    params = dict(params or {})
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    kind = params.get("rope_type", params.get("type", "default"))
    return theta, kind


def lmplay_identity(config: Any, source: str) -> tuple[str, ModelArgs, Family]:
    """(exp, sizes, family) of a transformers config that an lmplay family computes exactly."""
    model_type = getattr(config, "model_type", None)
    if model_type == "gpt2":
        return _gpt2_identity(config, source)
    if model_type == "llama":
        return _llama_identity(config, source)
    raise UsageError(
        f"{source}: a '{model_type}' model has no lmplay counterpart (mapped: gpt2 -> gpt2ish or "
        f"gpt2ish_tanh, llama -> modern or modern_tied); train it with --exp hf:{source}"
    )


def _refuse_mismatches(source: str, target: str, mismatches: list[str]) -> None:
    if mismatches:
        raise UsageError(
            f"{source}: its config does not map to lmplay's {target} ({'; '.join(mismatches)}); "
            f"train it with --exp hf:{source}"
        )


def _gpt2_identity(config: Any, source: str) -> tuple[str, ModelArgs, Family]:
    activation = config.activation_function
    exp = GELU_ACTIVATIONS.get(activation, "gpt2ish")
    checks = {
        "activation_function": (activation, "gelu, gelu_new or gelu_pytorch_tanh"),
        "layer_norm_epsilon": (config.layer_norm_epsilon, LAYER_NORM_EPS),
        "n_inner": (config.n_inner, f"None or {4 * config.n_embd}"),
        "scale_attn_weights": (config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, False),
        "add_cross_attention": (config.add_cross_attention, False),
        "tie_word_embeddings": (getattr(config, "tie_word_embeddings", True), True),
    }
    ok = {
        "activation_function": activation in GELU_ACTIVATIONS,
        "n_inner": config.n_inner in (None, 4 * config.n_embd),
    }
    mismatches = [
        f"{key} {got} (needs {want})"
        for key, (got, want) in checks.items()
        if not ok.get(key, got == want)
    ]
    _refuse_mismatches(source, exp, mismatches)
    args = ModelArgs(
        num_blocks=config.n_layer,
        embed_dim=config.n_embd,
        num_heads=config.n_head,
        context_len=config.n_positions,
        vocab_size=config.vocab_size,
        dropout=config_dropout(config),
    )
    return exp, args, FAMILIES[GPT2ishTanh if exp == "gpt2ish_tanh" else GPT2ish]


def _llama_identity(config: Any, source: str) -> tuple[str, ModelArgs, Family]:
    tied = bool(getattr(config, "tie_word_embeddings", False))
    exp = "modern_tied" if tied else "modern"
    hidden, heads = config.hidden_size, config.num_attention_heads
    theta, rope_type = rope_settings(config)
    checks = {
        "hidden_act": (config.hidden_act, "silu"),
        "rms_norm_eps": (config.rms_norm_eps, RMS_NORM_EPS),
        "rope_theta": (theta, ROPE_THETA),
        "rope_type": (rope_type, "default"),
        "num_key_value_heads": (getattr(config, "num_key_value_heads", heads) or heads, heads),
        "head_dim": (getattr(config, "head_dim", None) or hidden // heads, hidden // heads),
        "intermediate_size": (config.intermediate_size, swiglu_hidden(hidden)),
        "attention_bias": (getattr(config, "attention_bias", False), False),
        "mlp_bias": (getattr(config, "mlp_bias", False), False),
        "pretraining_tp": (getattr(config, "pretraining_tp", 1) or 1, 1),
    }
    mismatches = [f"{k} {got} (needs {want})" for k, (got, want) in checks.items() if got != want]
    _refuse_mismatches(source, exp, mismatches)
    args = ModelArgs(
        num_blocks=config.num_hidden_layers,
        embed_dim=hidden,
        num_heads=heads,
        context_len=config.max_position_embeddings,
        vocab_size=config.vocab_size,
        dropout=config_dropout(config),
    )
    return exp, args, FAMILIES[ModernTied if tied else Modern]
