"""The prefetching batcher: the StageBatcher's batches in its order, and the trained position."""

from __future__ import annotations

import random
import threading

import datasets
import pytest
import torch
from lmp_testing import make_document

from lmplay.data.batcher import Documents, StageBatcher
from lmplay.data.documents import tokenize_documents
from lmplay.data.prefetch import PrefetchingBatcher
from lmplay.data.samples import Sample, collate
from lmplay.train.step import prepare_mini_batches

CONTEXT = 64
OPTIONS = dict(epochs=1.5, seed=3, batch_size=6, context_len=CONTEXT)


@pytest.fixture(scope="module")
def docs() -> Documents:
    rng = random.Random(11)
    texts = [make_document(rng) for _ in range(30)]
    rows = datasets.Dataset.from_dict({"prompt": [""] * len(texts), "truth": texts})
    return Documents([tokenize_documents(rows)])


def plain_batches(docs: Documents, state: dict | None = None) -> list[list[Sample]]:
    batcher = StageBatcher(docs, **OPTIONS)
    if state is not None:
        batcher.load_state_dict(state)
    return list(iter(batcher.next_batch, None))


def prefetching(docs: Documents, state: dict | None = None) -> PrefetchingBatcher:
    batcher = StageBatcher(docs, **OPTIONS)
    if state is not None:
        batcher.load_state_dict(state)
    return PrefetchingBatcher(batcher, lambda samples: prepare_mini_batches(samples, 4, CONTEXT))


def test_same_batches_in_the_same_order_with_their_mini_batches(docs: Documents) -> None:
    expected = plain_batches(docs)
    with prefetching(docs) as batcher:
        got = list(iter(batcher.next_batch, None))
        assert batcher.finished and batcher.next_batch() is None
    assert [b.samples for b in got] == expected
    first = prepare_mini_batches(expected[0], 4, CONTEXT)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(got[0].mini_batches, first))


def test_saved_position_is_that_of_the_trained_batches(docs: Documents) -> None:
    reference = StageBatcher(docs, **OPTIONS)
    with prefetching(docs) as batcher:
        for trained in range(1, 4):
            batch = batcher.next_batch()
            assert batch is not None
            batcher.cursor.counters.add_padding(trained, 10 * trained)  # as the trainer does
            reference.next_batch()
            reference.cursor.counters.add_padding(trained, 10 * trained)
            assert batcher.state_dict() == reference.state_dict()  # not the prefetched batch's
            assert not batcher.finished
        state = batcher.state_dict()
    # Resuming from that state gives exactly the batches not yet trained.
    assert plain_batches(docs, state) == plain_batches(docs)[3:]
    with prefetching(docs, state) as resumed:
        assert [b.samples for b in iter(resumed.next_batch, None)] == plain_batches(docs)[3:]


def test_the_next_batch_is_prepared_while_the_current_one_is_used(docs: Documents) -> None:
    prepared: list[threading.Thread] = []
    second = threading.Event()

    def prepare(samples: list[Sample]) -> list:
        prepared.append(threading.current_thread())
        if len(prepared) == 2:
            second.set()
        return [collate(samples)]

    with PrefetchingBatcher(StageBatcher(docs, **OPTIONS), prepare) as batcher:
        batcher.next_batch()
        assert second.wait(timeout=10)  # the second batch, before anyone asked for it
        assert threading.main_thread() not in prepared
        assert len(prepared) == 2  # one batch ahead, no more


def test_an_error_while_preparing_is_raised_to_the_caller(docs: Documents) -> None:
    def broken(samples: list[Sample]) -> list:
        raise RuntimeError("cannot pack")

    batcher = PrefetchingBatcher(StageBatcher(docs, **OPTIONS), broken)
    with batcher, pytest.raises(RuntimeError, match="cannot pack"):
        batcher.next_batch()
