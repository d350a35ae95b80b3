"""modern with learned residual scaling (LayerScale, Touvron et al. 2021, "CaiT").

Each residual branch is multiplied by a learned per-channel gain that starts small, so every
block begins close to the identity and the network learns how much of each branch to let in.
This replaces GPT-2's fixed 1/sqrt(2L) init of the output projections, which is therefore
switched off here: the comparison against `modern` isolates "learned vs fixed residual scale".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmplay.models.modern import Modern, ModernBlock
from lmplay.models.modules import KVCache, Rope
from lmplay.models.registry import ModelArgs, register

# CaiT's value for networks up to ~18 blocks; deeper ones wanted 1e-5 or less.
LAYER_SCALE_INIT = 0.1


class LayerScale(nn.Module):
    """y = gain * x with one learned gain per channel."""

    def __init__(self, dim: int, init: float = LAYER_SCALE_INIT) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((dim,), init))
        # Decaying the gains would pull every branch towards off, not towards simpler weights.
        self.gain.skip_weight_decay = True

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain


class ScaledBlock(ModernBlock):
    def __init__(self, args: ModelArgs, layer: int) -> None:
        super().__init__(args, layer)
        self.attn_scale = LayerScale(args.embed_dim)
        self.mlp_scale = LayerScale(args.embed_dim)

    def forward(
        self, x: Tensor, cache: KVCache | None, rope: Rope, mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.attn_scale(self.attn(self.attn_norm(x), cache, rope, mask))
        return x + self.mlp_scale(self.mlp(self.mlp_norm(x)))


@register(
    "resscale",
    "modern + learned per-channel residual gains (LayerScale, init 0.1)",
    num_blocks=4,
    embed_dim=256,
    num_heads=4,
    context_len=256,
)
class ResScale(Modern):
    block_class = ScaledBlock
    scale_residual_init = False
