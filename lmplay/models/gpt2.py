"""GPT-2 exactly as released: gpt2ish with the tanh approximation of GELU.

Pretrained GPT-2 folders (`activation_function: gelu_new`) import as this experiment, so their
weights compute what they were trained to compute; gpt2ish itself uses the exact (erf) GELU.
"""

from __future__ import annotations

from lmplay.models.gpt2ish import GPT2ish
from lmplay.models.registry import ModelArgs, register


@register(
    "gpt2",
    "gpt2ish with GPT-2's tanh-approximate GELU, as pretrained GPT-2 weights use (124M sizes)",
    num_blocks=12,
    embed_dim=768,
    num_heads=12,
    context_len=1024,
)
class GPT2(GPT2ish):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        for block in self.blocks:
            block.mlp.approximate = "tanh"
