"""What the data side hands to training: a `Sample` (prompt run-up and truth tokens) and a
`Batch` of them collated into padded tensors, with the ids those tensors reserve.

`targets[b, t]` is the token after `input_ids[b, t]` where it is truth, IGNORE_INDEX elsewhere
(prompt and padding), so the loss counts exactly the truth tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # the target of positions that carry no loss (train.loss skips them)
# Padding sits at the end of rows and carries no target, so causal attention never lets it
# influence a real position; 0 is valid in every vocabulary, including tiny test ones.
PAD_ID = 0


@dataclass(frozen=True)
class Sample:
    """Tokens of one training row: `prompt` is context only, `truth` is trained on."""

    prompt: tuple[int, ...]
    truth: tuple[int, ...]
    doc: int = -1  # global document index within the stage (for the coverage ledger)
    offset: int = 0  # where `truth` starts inside the document's truth tokens
    truncated: int = 0  # prompt tokens dropped to fit the context
    mid_sentence: bool = False  # True when the cut after this sample fell inside a sentence

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.truth)


@dataclass
class Batch:
    """A collated list of samples: `targets[b, t]` is the token after `input_ids[b, t]`.

    Rows hold one sample each, unless `segments` is set: then a row may hold several (see
    `lmplay.data.packing`), and a model must keep them from attending to each other.
    """

    input_ids: torch.Tensor  # (B, T) long, padded with PAD_ID at the end of rows
    targets: torch.Tensor  # (B, T) long, IGNORE_INDEX on prompt and padding positions
    samples: list[Sample]
    positions: torch.Tensor | None = None  # (B, T) long: each token's position in its sample
    segments: torch.Tensor | None = None  # (B, T) long: its sample's slot in the row; -1: padding

    @property
    def packed(self) -> bool:
        return self.segments is not None

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory, which a CUDA device reads asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, move: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        def maybe(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else move(t)

        return Batch(
            move(self.input_ids),
            move(self.targets),
            self.samples,
            maybe(self.positions),
            maybe(self.segments),
        )

    @property
    def loss_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    @property
    def tokens(self) -> int:
        """Real (non-padding) input tokens."""
        return sum(sample.num_tokens - 1 for sample in self.samples)

    @property
    def padding(self) -> int:
        return self.input_ids.numel() - self.tokens


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad to the longest sample; only positions whose next token is truth carry a target."""
    width = max(sample.num_tokens for sample in samples) - 1
    input_ids = torch.full((len(samples), width), PAD_ID, dtype=torch.long)
    targets = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        write_sample(sample, input_ids[row], targets[row], 0)
    return Batch(input_ids, targets, list(samples))


def write_sample(sample: Sample, input_ids: torch.Tensor, targets: torch.Tensor, at: int) -> int:
    """Write `sample` into one row from column `at`; returns its input length."""
    tokens = torch.tensor(sample.prompt + sample.truth, dtype=torch.long)
    length = len(tokens) - 1
    input_ids[at : at + length] = tokens[:-1]
    first_target = len(sample.prompt) - 1  # the last prompt token predicts the first truth
    targets[at + first_target : at + length] = tokens[first_target + 1 :]
    return length
