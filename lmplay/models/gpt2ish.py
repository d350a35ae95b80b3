"""GPT-2: pre-norm blocks, learned positions, LayerNorm, GELU MLP, lm_head tied to wte."""

from __future__ import annotations

from torch import Tensor, nn

from lmplay.models.modules import (
    CausalSelfAttention,
    GeluMLP,
    KVCache,
    init_weights,
    token_positions,
)
from lmplay.models.registry import ModelArgs, register


class GPT2Block(nn.Module):
    def __init__(self, args: ModelArgs, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(args.embed_dim)
        self.attn = CausalSelfAttention(args, layer, bias=True)
        self.ln_2 = nn.LayerNorm(args.embed_dim)
        self.mlp = GeluMLP(args)

    def forward(
        self, x: Tensor, cache: KVCache | None = None, mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, mask=mask)
        return x + self.mlp(self.ln_2(x))


@register(
    "gpt2ish_355m",
    "GPT-2 medium sizes (~350M params): 24 blocks, 1024 dim",
    num_blocks=24,
    embed_dim=1024,
    num_heads=16,
    context_len=1024,
)
@register(
    "gpt2ish_124m",
    "GPT-2 small sizes (~124M params): 12 blocks, 768 dim",
    num_blocks=12,
    embed_dim=768,
    num_heads=12,
    context_len=1024,
)
@register(
    "gpt2ish",
    "GPT-2 architecture at CPU-friendly sizes (pre-norm, learned positions, tied head)",
    num_blocks=4,
    embed_dim=256,
    num_heads=4,
    context_len=256,
)
class GPT2ish(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.wte = nn.Embedding(args.vocab_size, args.embed_dim)
        self.wpe = nn.Embedding(args.context_len, args.embed_dim)
        self.drop = nn.Dropout(args.dropout)
        self.blocks = nn.ModuleList(GPT2Block(args, i) for i in range(args.num_blocks))
        self.ln_f = nn.LayerNorm(args.embed_dim)
        self.lm_head = nn.Linear(args.embed_dim, args.vocab_size, bias=False)
        init_weights(self, args.num_blocks)
        self.lm_head.weight = self.wte.weight

    def forward(
        self,
        input_ids: Tensor,
        kv_cache: KVCache | None = None,
        positions: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor:
        pos, mask = token_positions(
            input_ids, kv_cache, self.args.context_len, positions, segments
        )  # (T,) or (B, T); mask (B, 1, T, T) for packed rows
        x = self.drop(self.wte(input_ids) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, kv_cache, mask)
        if kv_cache is not None:
            kv_cache.advance(input_ids.size(1))
        return self.ln_f(x)  # (B, T, C): the loss applies lm_head in chunks
