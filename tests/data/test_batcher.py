"""The batcher: coverage ledger, sentence-boundary cuts, determinism, O(1) resume, fractions."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import pairwise

import datasets
import pytest
import torch
from lmp_testing import make_document

from lmplay.data.batcher import Documents, StageBatcher, cut_document
from lmplay.data.documents import tokenize_documents
from lmplay.data.samples import IGNORE_INDEX, PAD_ID, Sample, collate
from lmplay.data.tokenizer import EOT_ID

CONTEXT = 64


@pytest.fixture(scope="module")
def corpus() -> datasets.Dataset:
    rng = random.Random(7)
    texts = [make_document(rng) for _ in range(60)]
    rows = datasets.Dataset.from_dict({"prompt": [""] * len(texts), "truth": texts})
    return tokenize_documents(rows)


def all_batches(batcher: StageBatcher) -> list[list[Sample]]:
    batches = []
    while (batch := batcher.next_batch()) is not None:
        batches.append(batch)
    return batches


def test_every_truth_token_is_a_target_exactly_once(corpus: datasets.Dataset) -> None:
    docs = Documents([corpus])
    batcher = StageBatcher(docs, epochs=1, seed=0, batch_size=8, context_len=CONTEXT)
    ledger: Counter[tuple[int, int]] = Counter()
    for batch in all_batches(batcher):
        for sample in batch:
            assert sample.num_tokens <= CONTEXT + 1
            for i in range(len(sample.truth)):
                ledger[(sample.doc, sample.offset + i)] += 1
    expected = {(d, i) for d in range(len(docs)) for i in range(len(docs[d]["truth_ids"]))}
    assert set(ledger) == expected
    assert set(ledger.values()) == {1}


def test_targets_are_the_truth_tokens_and_nothing_else() -> None:
    samples = [Sample((EOT_ID, 5), (6, 7, 8)), Sample((9,), (10,))]
    batch = collate(samples)
    assert batch.input_ids.tolist() == [[EOT_ID, 5, 6, 7], [9, PAD_ID, PAD_ID, PAD_ID]]
    assert batch.targets.tolist() == [
        [IGNORE_INDEX, 6, 7, 8],
        [10, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert batch.loss_tokens == 4
    assert batch.tokens == 5
    assert batch.padding == 3


def test_cuts_fall_at_sentence_ends_unless_a_sentence_is_too_long(corpus) -> None:
    for doc in range(len(corpus)):
        row = corpus[doc]
        ends = set(row["sentence_ends"])
        sentence_starts = [0, *row["sentence_ends"]]
        pieces = cut_document(
            row["prompt_ids"], row["truth_ids"], row["sentence_ends"],
            context_len=CONTEXT, run_up_max=CONTEXT // 4,
        )  # fmt: skip
        for piece in pieces:
            end = piece.offset + len(piece.truth)
            if not piece.mid_sentence:
                assert end in ends
                continue
            # A mid-sentence cut only happens when the whole sentence could not fit.
            start_of_sentence = max(s for s in sentence_starts if s <= piece.offset)
            next_end = min(e for e in ends if e > piece.offset)
            room = CONTEXT + 1 - len(piece.prompt)
            assert next_end - piece.offset > room
            assert start_of_sentence <= piece.offset
        # No unnecessary truncation: a piece stops only where the next sentence would not fit.
        for piece, following in pairwise(pieces):
            end = piece.offset + len(piece.truth)
            later_ends = [e for e in row["sentence_ends"] if e > end]
            if not piece.mid_sentence and later_ends:
                assert later_ends[0] - piece.offset + len(piece.prompt) > CONTEXT + 1
            assert following.offset == end


def test_continuations_carry_the_previous_sentence_as_run_up(corpus) -> None:
    row = max(corpus, key=lambda r: len(r["truth_ids"]))
    pieces = cut_document(
        row["prompt_ids"], row["truth_ids"], row["sentence_ends"],
        context_len=CONTEXT, run_up_max=CONTEXT // 4,
    )  # fmt: skip
    assert len(pieces) > 2
    assert pieces[0].prompt == (EOT_ID,)
    starts = [0, *row["sentence_ends"]]
    for piece in pieces[1:]:
        assert 0 < len(piece.prompt) <= CONTEXT // 4
        run_up_start = piece.offset - len(piece.prompt)
        assert piece.prompt == tuple(row["truth_ids"][run_up_start : piece.offset])
        # The run-up never reaches back past the start of the sentence before the cut.
        sentence_start = max(s for s in starts if s < piece.offset)
        assert run_up_start >= sentence_start


def test_same_seed_same_batches_other_seed_other_order(corpus) -> None:
    docs = Documents([corpus])

    def first_docs(seed: int) -> list[int]:
        batcher = StageBatcher(docs, epochs=1, seed=seed, batch_size=8, context_len=CONTEXT)
        return [s.doc for s in batcher.next_batch()]

    assert first_docs(1) == first_docs(1)
    assert first_docs(1) != first_docs(2)


@pytest.mark.parametrize("stop_after", [0, 1, 5, 17])
def test_resume_from_state_gives_the_same_remaining_batches(corpus, stop_after: int) -> None:
    docs = Documents([corpus])
    make = lambda: StageBatcher(docs, epochs=1.5, seed=3, batch_size=8, context_len=CONTEXT)  # noqa: E731
    reference = all_batches(make())
    interrupted = make()
    for _ in range(stop_after):
        interrupted.next_batch()
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    assert all_batches(resumed) == reference[stop_after:]
    assert resumed.cursor.counters == _counters_of(make())


def _counters_of(batcher: StageBatcher):
    all_batches(batcher)
    return batcher.cursor.counters


def test_fractional_epochs_take_a_share_of_documents_without_repeats(corpus) -> None:
    docs = Documents([corpus])
    batcher = StageBatcher(docs, epochs=1.25, seed=0, batch_size=8, context_len=CONTEXT)
    starts = [s.doc for batch in all_batches(batcher) for s in batch if s.offset == 0]
    first_epoch, second_epoch = starts[: len(docs)], starts[len(docs) :]
    assert sorted(first_epoch) == list(range(len(docs)))
    assert len(second_epoch) == math.ceil(0.25 * len(docs))
    assert len(set(second_epoch)) == len(second_epoch)


def test_quarter_epoch_trains_on_a_quarter_of_documents(corpus) -> None:
    docs = Documents([corpus])
    batcher = StageBatcher(docs, epochs=0.25, seed=0, batch_size=4, context_len=CONTEXT)
    seen = {s.doc for batch in all_batches(batcher) for s in batch}
    assert len(seen) == math.ceil(0.25 * len(docs))


def test_several_datasets_are_interleaved(corpus) -> None:
    half = len(corpus) // 2
    docs = Documents([corpus.select(range(half)), corpus.select(range(half, len(corpus)))])
    batcher = StageBatcher(docs, epochs=1, seed=0, batch_size=8, context_len=CONTEXT)
    order = [s.doc for batch in all_batches(batcher) for s in batch if s.offset == 0]
    sources = [doc >= half for doc in order]
    assert sorted(order) == list(range(len(corpus)))
    switches = sum(a != b for a, b in pairwise(sources))
    assert switches > len(order) // 4  # mixed throughout, not one dataset after the other


def test_counters_report_padding_and_truncation(corpus) -> None:
    docs = Documents([corpus])
    batcher = StageBatcher(docs, epochs=1, seed=0, batch_size=8, context_len=CONTEXT)
    for batch in all_batches(batcher):
        collated = collate(batch)
        batcher.cursor.counters.add_padding(collated.padding, collated.input_ids.numel())
    counters = batcher.cursor.counters
    total_truth = sum(len(docs[d]["truth_ids"]) for d in range(len(docs)))
    assert counters.loss_tokens == total_truth
    ratios = counters.ratios()
    assert 0 < ratios["padding_ratio"] < 1
    assert ratios["truncation_ratio"] == 0.0


def test_a_long_prompt_is_truncated_from_the_left_and_counted() -> None:
    prompt = list(range(100, 200))
    pieces = cut_document(prompt, [1, 2, 3], [3], context_len=CONTEXT, run_up_max=16)
    assert len(pieces) == 1
    piece = pieces[0]
    assert piece.num_tokens <= CONTEXT + 1
    assert piece.prompt[-1] == 199
    assert piece.truncated == 101 - len(piece.prompt)
    assert torch.equal(collate([piece]).targets[0, -3:], torch.tensor([1, 2, 3]))
