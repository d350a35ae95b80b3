"""A Llama-style decoder: RMSNorm, rotary positions, SwiGLU, no biases, untied head."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from lmplay.errors import UsageError
from lmplay.models.modules import (
    CausalSelfAttention,
    KVCache,
    RMSNorm,
    Rope,
    SwiGLU,
    init_weights,
    rotary_tables,
    token_positions,
)
from lmplay.models.registry import ModelArgs, register


class ModernBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(args.embed_dim)
        self.attn = CausalSelfAttention(args, layer, bias=False)
        self.mlp_norm = RMSNorm(args.embed_dim)
        self.mlp = SwiGLU(args)

    def forward(
        self, x: Tensor, cache: KVCache | None, rope: Rope, mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cache, rope, mask)
        return x + self.mlp(self.mlp_norm(x))


@register(
    "modern_162m",
    "modern at GPT-2 small sizes (~162M params, untied head): 12 blocks, 768 dim",
    num_blocks=12,
    embed_dim=768,
    num_heads=12,
    context_len=1024,
)
@register(
    "modern",
    "Llama-style: RMSNorm, rotary positions, SwiGLU, no biases, untied head",
    num_blocks=4,
    embed_dim=256,
    num_heads=4,
    context_len=256,
)
class Modern(nn.Module):
    """Subclasses swap the block (`block_class`) or tie the head (`tie_embeddings`)."""

    block_class: ClassVar[type[nn.Module]] = ModernBlock
    tie_embeddings: ClassVar[bool] = False
    scale_residual_init: ClassVar[bool] = True

    @staticmethod
    def check_args(args: ModelArgs) -> None:
        if args.head_dim % 2:
            raise UsageError(
                f"--embed-dim {args.embed_dim} / --num-heads {args.num_heads} gives head dim "
                f"{args.head_dim}; rotary positions need an even head dim"
            )

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.check_args(args)
        self.args = args
        self.wte = nn.Embedding(args.vocab_size, args.embed_dim)
        self.drop = nn.Dropout(args.dropout)
        self.blocks = nn.ModuleList(self.block_class(args, i) for i in range(args.num_blocks))
        self.norm = RMSNorm(args.embed_dim)
        self.lm_head = nn.Linear(args.embed_dim, args.vocab_size, bias=False)
        init_weights(self, args.num_blocks, scale_residual=self.scale_residual_init)
        if self.tie_embeddings:
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
        rope = rotary_tables(self.args.head_dim, pos)
        x = self.drop(self.wte(input_ids))  # (B, T, C)
        for block in self.blocks:
            x = block(x, kv_cache, rope, mask)
        if kv_cache is not None:
            kv_cache.advance(input_ids.size(1))
        return self.norm(x)  # (B, T, C): the loss applies lm_head in chunks


@register(
    "modern_tied",
    "modern with lm_head tied to the token embedding",
    num_blocks=4,
    embed_dim=256,
    num_heads=4,
    context_len=256,
)
class ModernTied(Modern):
    tie_embeddings = True
