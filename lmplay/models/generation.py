"""Autoregressive sampling with a KV cache: prefill the prompt once, then one token per step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmplay.models.modules import KVCache


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError naming the bad sampling setting."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set to -inf every logit of (B, V) outside the top-k and outside the top-p nucleus."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p; the top one always stays.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> int:
    """Pick the next token from the last position's logits (1, V)."""
    if temperature == 0.0:
        return int(logits.argmax(-1).item())
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)  # (1, V)
    return int(torch.multinomial(probs, 1, generator=generator).item())


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_token: int | None = None,
) -> list[int]:
    """The new token ids that follow `prompt_ids` (the prompt itself is not included).

    temperature 0 is greedy decoding. Generation ends after `max_new_tokens`, when the
    context is full, or at `stop_token` (which is not returned). A given `seed` makes sampling
    reproducible without touching the global RNG.
    """
    check_sampling(temperature, top_k, top_p)
    context_len = model.args.context_len
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    if len(prompt_ids) > context_len:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens exceeds context {context_len}")
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

    was_training = model.training
    model.eval()
    try:
        cache = KVCache(context_len)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, P)
        out: list[int] = []
        while len(out) < max_new_tokens and cache.pos + ids.size(1) <= context_len:
            hidden = model(ids, kv_cache=cache)[:, -1]  # (1, C)
            logits = model.lm_head(hidden)  # (1, V): the last position only
            token = _next_token(logits, temperature, top_k, top_p, generator)
            if token == stop_token:
                break
            out.append(token)
            ids = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
        return out
    finally:
        model.train(was_training)
