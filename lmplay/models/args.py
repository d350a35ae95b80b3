"""ModelArgs: the sizes a model is built from, stored in checkpoints beside the weights.

A module of its own so that model code (`modules.py`) and the experiment registry both import it
without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields

from lmplay.errors import UsageError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild a model; stored in checkpoints beside the weights."""

    num_blocks: int
    embed_dim: int
    num_heads: int
    context_len: int
    vocab_size: int = 50257
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout":
                # bool is an int subclass; a JSON `true` must not pass as a size or a rate.
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UsageError(f"--dropout must be a number, got {value!r}")
                if not 0.0 <= value < 1.0:
                    raise UsageError(f"--dropout must be in [0, 1), got {value}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{_flag(f.name)} must be an integer, got {value!r}")
            elif value <= 0:
                raise UsageError(f"{_flag(f.name)} must be positive, got {value}")
        if self.embed_dim % self.num_heads != 0:
            raise UsageError(
                f"--embed-dim {self.embed_dim} is not divisible by --num-heads {self.num_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, int | float]) -> ModelArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown model args {unknown}; expected keys from {sorted(known)}")
        required = {f.name for f in fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise UsageError(f"model args are missing {missing}")
        return cls(**d)
