"""Pack short samples into shared rows instead of padding one sample per row.

Samples are placed first-fit in order of decreasing length into rows of `row_len` input tokens.
Each token keeps its position inside its own sample (`Batch.positions`) and the row slot of its
sample (`Batch.segments`); a model that attends only within a segment and embeds those positions
computes exactly the logits of the unpacked rows, so the loss does not change, only the padding.
Padding gets segment -1: it attends only to padding, and no real token attends to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmplay.data.samples import IGNORE_INDEX, PAD_ID, Batch, Sample, collate, write_sample


def pack(samples: Sequence[Sample], row_len: int) -> Batch:
    """Rows of at most `row_len` tokens holding one or more samples.

    Plain `collate` rows when packing would not compute fewer slots (nothing fits together, or
    full packed rows beat ragged plain ones): they keep the model's faster causal path.
    """
    lengths = [sample.num_tokens - 1 for sample in samples]
    if max(lengths) > row_len:
        raise ValueError(f"a sample of {max(lengths)} input tokens does not fit rows of {row_len}")
    rows = first_fit_decreasing(lengths, row_len)
    width = max(sum(lengths[i] for i in row) for row in rows)
    if len(rows) * width >= len(samples) * max(lengths):
        return collate(samples)
    shape = (len(rows), width)
    input_ids = torch.full(shape, PAD_ID, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for slot, i in enumerate(row):
            length = write_sample(samples[i], input_ids[r], targets[r], at)
            positions[r, at : at + length] = torch.arange(length)
            segments[r, at : at + length] = slot
            at += length
    ordered = [samples[i] for row in rows for i in row]
    return Batch(input_ids, targets, ordered, positions, segments)


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total at most `capacity`; deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins
