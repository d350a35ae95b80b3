"""What a stage may train: its budgets of tokens and steps, counted as batches are handed out.

The counters live in the batcher's cursor (and so in every checkpoint); a budget is checked per
step, after each logical batch: a stage's last batch is whole, so a tokens budget may be passed
by less than one batch, and a steps budget is met exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class BatcherCounters:
    samples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    truncated_tokens: int = 0
    padding_tokens: int = 0
    padded_slots: int = 0
    batches: int = 0  # logical batches handed out: the stage's optimizer steps

    def add(self, samples: Sequence[Any]) -> None:
        """Count a logical batch of `Sample`s handed out."""
        self.batches += 1
        self.samples += len(samples)
        self.tokens += sum(s.num_tokens - 1 for s in samples)
        self.loss_tokens += sum(len(s.truth) for s in samples)
        self.truncated_tokens += sum(s.truncated for s in samples)

    def add_padding(self, padding_tokens: int, slots: int) -> None:
        """Padding depends on how the step splits the batch, so the step reports it."""
        self.padding_tokens += padding_tokens
        self.padded_slots += slots

    def ratios(self) -> dict[str, float]:
        seen = self.tokens + self.truncated_tokens
        return {
            "padding_ratio": self.padding_tokens / self.padded_slots if self.padded_slots else 0.0,
            "truncation_ratio": self.truncated_tokens / seen if seen else 0.0,
        }


def truth_lengths(dataset: Any) -> np.ndarray:
    """len(truth_ids) of every row: from the Arrow columns of a `datasets.Dataset` without
    decoding the token lists, or row by row from any other sequence of documents."""
    if hasattr(dataset, "select_columns"):
        import pyarrow.compute as pc

        table = dataset.select_columns(["num_tokens", "prompt_ids"]).with_format("arrow")[:]
        prompt = pc.list_value_length(table["prompt_ids"]).to_numpy(zero_copy_only=False)
        return table["num_tokens"].to_numpy(zero_copy_only=False).astype(np.int64) - prompt
    return np.array([len(row["truth_ids"]) for row in dataset], dtype=np.int64)


@dataclass(frozen=True)
class Budget:
    """A stage's limits besides its epochs: trained target tokens and optimizer steps."""

    tokens: int | None = None
    steps: int | None = None

    def reached(self, counters: BatcherCounters) -> str | None:
        """Which budget the counters have reached ('steps' or 'tokens'), checked per step."""
        if self.steps is not None and counters.batches >= self.steps:
            return "steps"
        if self.tokens is not None and counters.loss_tokens >= self.tokens:
            return "tokens"
        return None

    def fractions(self, counters: BatcherCounters) -> list[tuple[float, int, int, str]]:
        """(fraction done, done, total, unit) of each budget set."""
        found = []
        if self.steps is not None:
            found.append((counters.batches / self.steps, counters.batches, self.steps, "step"))
        if self.tokens is not None:
            done = counters.loss_tokens
            found.append((done / self.tokens, done, self.tokens, "tok"))
        return found

    def message(self, which: str) -> str:
        total = self.steps if which == "steps" else self.tokens
        return f"reached its budget of {total:,} {'steps' if which == 'steps' else 'tokens'}"
