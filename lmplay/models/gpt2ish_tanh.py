"""gpt2ish with GPT-2's tanh approximation of GELU, as the released GPT-2 weights use it.

Pretrained GPT-2 folders (`activation_function: gelu_new`) import as this experiment, so their
weights compute what they were trained to compute; gpt2ish itself uses the exact (erf) GELU.
"""

from __future__ import annotations

from lmplay.models.gpt2ish import GPT2ish
from lmplay.models.registry import ModelArgs, register


@register(
    "gpt2ish_tanh",
    "gpt2ish with tanh-approximate GELU, as pretrained GPT-2 weights use (what they import as)",
    num_blocks=4,
    embed_dim=256,
    num_heads=4,
    context_len=256,
)
class GPT2ishTanh(GPT2ish):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        for block in self.blocks:
            block.mlp.approximate = "tanh"
