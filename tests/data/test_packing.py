"""Packing: every sample once, in rows that fit, with positions and segments that undo it."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmplay.data.packing import first_fit_decreasing, pack
from lmplay.data.samples import IGNORE_INDEX, Sample, collate

ROW = 64


def samples_of(lengths: list[tuple[int, int]], seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(
            tuple(rng.randrange(1, 500) for _ in range(p)),
            tuple(rng.randrange(1, 500) for _ in range(t)),
        )
        for p, t in lengths
    ]


@given(st.lists(st.integers(1, ROW), min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_first_fit_decreasing_places_every_item_once_within_capacity(lengths) -> None:
    bins = first_fit_decreasing(lengths, ROW)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= ROW for b in bins)
    # first fit never leaves two bins that could have been one
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > ROW
    assert first_fit_decreasing(lengths, ROW) == bins  # deterministic


lengths_strategy = st.lists(
    st.tuples(st.integers(1, 12), st.integers(1, 40)).filter(lambda pt: sum(pt) <= ROW + 1),
    min_size=1,
    max_size=16,
)


@given(lengths_strategy, st.integers(0, 10**6))
@settings(max_examples=150, deadline=None)
def test_packed_rows_hold_each_sample_exactly_as_collate_would(lengths, seed) -> None:
    samples = samples_of(lengths, seed)
    batch = pack(samples, ROW)
    plain = collate(samples)
    assert batch.input_ids.size(1) <= ROW
    assert batch.input_ids.numel() <= plain.input_ids.numel()
    assert batch.packed == (batch.input_ids.numel() < plain.input_ids.numel())
    assert batch.loss_tokens == plain.loss_tokens and batch.tokens == plain.tokens
    assert sorted(map(id, batch.samples)) == sorted(map(id, samples))
    if not batch.packed:
        assert torch.equal(batch.input_ids, plain.input_ids)
        return
    assert batch.positions is not None and batch.segments is not None
    seen = []
    for r in range(batch.input_ids.size(0)):
        row_segments = batch.segments[r]
        for slot in row_segments.unique().tolist():
            where = (row_segments == slot).nonzero().flatten()
            if slot == -1:  # padding only at the row's end, without targets
                assert where.min() > (row_segments >= 0).nonzero().max()
                assert (batch.targets[r, where] == IGNORE_INDEX).all()
                continue
            assert torch.equal(where, torch.arange(where[0], where[-1] + 1))  # contiguous
            assert torch.equal(batch.positions[r, where], torch.arange(len(where)))
            seen.append((batch.input_ids[r, where].tolist(), batch.targets[r, where].tolist()))
    expected = []
    for row in range(len(samples)):
        length = samples[row].num_tokens - 1
        expected.append(
            (plain.input_ids[row, :length].tolist(), plain.targets[row, :length].tolist())
        )
    assert sorted(seen) == sorted(expected)


def test_short_samples_share_rows_and_save_padding() -> None:
    samples = samples_of([(1, 10)] * 6 + [(2, 50)], seed=3)
    batch = pack(samples, ROW)
    assert batch.packed
    # 51 + 10 tokens in one row, the other five 10-token samples in a second
    assert batch.input_ids.shape == (2, 61)
    assert batch.padding == 122 - (51 + 6 * 10) < collate(samples).padding


@pytest.mark.parametrize(
    "lengths",
    [
        [(1, 40), (1, 41)],  # nothing fits together
        [(1, 1), (1, 22), (3, 40)],  # 42+22 fill a row, 1 needs a second: 128 slots, plain 126
    ],
)
def test_plain_rows_when_packing_saves_nothing(lengths) -> None:
    samples = samples_of(lengths)
    batch = pack(samples, ROW)
    assert not batch.packed and batch.positions is None
    assert torch.equal(batch.input_ids, collate(samples).input_ids)


def test_a_sample_longer_than_the_row_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit rows of 64"):
        pack(samples_of([(1, ROW + 1)]), ROW)
