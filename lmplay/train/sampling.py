"""Samples during training: fixed prompts continued every `--generate-every` samples.

Each prompt is sampled with its own `torch.Generator`, seeded from the run seed, the step and
the prompt's index, so the global RNG streams that dropout and data order draw from are never
touched: a run with samples trains bit-identically to one without, and a resumed run draws the
same samples as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmplay.config import SamplesConfig
from lmplay.data.tokenizer import EOT_ID, get_tokenizer
from lmplay.models.generation import generate
from lmplay.train.validation import EXAMPLE_CHARS, shorten


def sample_seed(run_seed: int, step: int, index: int) -> int:
    return ((run_seed * 1_000_003 + step) * 1_000_003 + index) % (2**63)


def generate_samples(
    model: nn.Module, prompts: tuple[str, ...], settings: SamplesConfig, run_seed: int, step: int
) -> list[dict[str, Any]]:
    """One record per prompt: the prompt, its continuation and how it was sampled."""
    tokenizer = get_tokenizer()
    context_len = model.args.context_len
    records = []
    for index, prompt in enumerate(prompts):
        ids = tokenizer.encode_ordinary(prompt)[
            -(context_len - 1) :
        ]  # room for at least one new token
        seed = sample_seed(run_seed, step, index)
        new = generate(
            model,
            ids,
            settings.generate_tokens,
            temperature=settings.temperature,
            top_k=settings.top_k or None,
            seed=seed,
            stop_token=EOT_ID,
        )
        records.append(
            {
                "prompt": prompt,
                "text": shorten(tokenizer.decode(new), EXAMPLE_CHARS),
                "temperature": settings.temperature,
                "top_k": settings.top_k,
                "seed": seed,
            }
        )
    return records
