"""lmplay: a training-plan engine for small language models.

    import lmplay
    run = lmplay.load("out_gpt/tiny/gpt2ish.lmp")       # or a transformers folder
    print(run.generate("Once upon a time", max_new_tokens=40, seed=0))
    print(lmplay.score(run, plan="tiny"))                 # {set: Score(loss, perplexity, ...)}

`import lmplay` stays light: torch and the rest load on the first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load", "score"]

if TYPE_CHECKING:
    from pathlib import Path

    from lmplay.api import Loaded, Score


def load(path: str | Path, device: str = "cpu") -> Loaded:
    """A checkpoint (`.lmp`) or transformers folder as `.model`, `.tokenizer`, `.config` and
    `.generate(prompt, max_new_tokens=..., temperature=..., top_k=..., seed=...)`."""
    from lmplay.api import load as load_model

    return load_model(path, device)


def score(model: Any, texts: list[str] | None = None, **options: Any) -> dict[str, Score]:
    """{set: Score(loss, perplexity, tokens, ...)} of `texts`, or of `plan=`'s validation sets
    (`set=`, `validation_samples=`), computed exactly as the trainer's validation."""
    from lmplay.api import score as score_model

    return score_model(model, texts, **options)
