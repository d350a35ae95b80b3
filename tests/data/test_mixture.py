"""The mixture sampler and stage budgets: proportions in tokens, repeats, exact ends, resume."""

from __future__ import annotations

import random
from collections import Counter

import datasets
import pytest
from lmp_testing import make_document

from lmplay.data.batcher import Documents, StageBatcher
from lmplay.data.budget import Budget
from lmplay.data.documents import tokenize_documents
from lmplay.data.mixture import MixtureBatcher
from lmplay.data.samples import Sample

CONTEXT = 32


def corpus(count: int, seed: int) -> datasets.Dataset:
    rng = random.Random(seed)
    texts = [make_document(rng) for _ in range(count)]
    return tokenize_documents(datasets.Dataset.from_dict({"prompt": [""] * count, "truth": texts}))


@pytest.fixture(scope="module")
def docs() -> Documents:
    """'big' (240 documents) and 'small' (120): a 50/50 mixture repeats 'small'."""
    return Documents([corpus(240, 1), corpus(120, 2)], ["big", "small"])


def mixture(docs: Documents, weights, *, repeat: bool = True, **budget: int) -> MixtureBatcher:
    return MixtureBatcher(
        docs, weights, repeat=repeat, seed=3, batch_size=8, context_len=CONTEXT,
        budget=Budget(**budget),
    )  # fmt: skip


def drain(batcher) -> list[list[Sample]]:
    batches = []
    while (batch := batcher.next_batch()) is not None:
        batches.append(batch)
    return batches


def trained(docs: Documents, batches: list[list[Sample]]) -> Counter[str]:
    tokens: Counter[str] = Counter()
    for sample in (s for batch in batches for s in batch):
        tokens[docs.names[docs.source_of(sample.doc)]] += len(sample.truth)
    return tokens


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2)])
def test_realised_mixture_is_within_one_percent_of_the_weights(docs, weights) -> None:
    budget = int(docs.truth_lengths().sum() * 2)  # 'small' runs out more than once
    batcher = mixture(docs, weights, tokens=budget)
    batches = drain(batcher)
    tokens = trained(docs, batches)
    total = sum(tokens.values())
    started = Counter(
        docs.names[docs.source_of(s.doc)] for b in batches for s in b if s.offset == 0
    )
    assert min(started.values()) > 100
    for name, weight in zip(docs.names, weights):
        assert abs(tokens[name] / total - weight / sum(weights)) < 0.01, (name, tokens)
    assert batcher.cursor.passes[1] >= 1  # 'small' was re-permuted and repeated
    assert batcher.end_reason(batcher.cursor) == (
        "tokens",
        f"reached its budget of {budget:,} tokens",
    )


def test_without_repeat_the_stage_ends_when_the_first_dataset_runs_out(docs) -> None:
    batcher = mixture(docs, (0.5, 0.5), repeat=False)
    batches = drain(batcher)
    reason, message = batcher.end_reason(batcher.cursor)
    assert reason == "ran_out" and "dataset 'small' ran out" in message
    ledger = Counter((s.doc, s.offset + i) for b in batches for s in b for i in range(len(s.truth)))
    small = range(int(docs.offsets[1]), int(docs.offsets[2]))
    expected = {(d, i) for d in small for i in range(int(docs.truth_lengths()[d]))}
    assert expected <= set(ledger) and set(ledger.values()) == {1}  # every token once, no repeat
    assert batcher.cursor.passes == [0, 0]
    tokens = trained(docs, batches)
    assert abs(tokens["small"] / sum(tokens.values()) - 0.5) < 0.01


def test_a_mixture_resumed_anywhere_serves_the_same_batches(docs) -> None:
    straight = drain(mixture(docs, (0.5, 0.5), steps=60))
    assert len(straight) == 60
    for cut in (1, 17, 33, 59):
        first = mixture(docs, (0.5, 0.5), steps=60)
        head = [first.next_batch() for _ in range(cut)]
        resumed = mixture(docs, (0.5, 0.5), steps=60)
        resumed.load_state_dict(first.state_dict())
        assert head + drain(resumed) == straight, cut


def test_budgets_end_the_stage_at_the_right_step(docs) -> None:
    steps = StageBatcher(
        docs, epochs=5, seed=0, batch_size=8, context_len=CONTEXT, budget=Budget(steps=7)
    )
    assert len(drain(steps)) == 7 and steps.end_reason(steps.cursor)[0] == "steps"
    tokens = 3000  # checked per step: the stage ends with the batch that reaches the budget
    batcher = StageBatcher(
        docs, epochs=5, seed=0, batch_size=8, context_len=CONTEXT, budget=Budget(tokens=tokens)
    )
    sums = [sum(len(s.truth) for s in batch) for batch in drain(batcher)]
    assert sum(sums[:-1]) < tokens <= sum(sums)
    assert batcher.cursor.counters.loss_tokens == sum(sums)
    epochs = StageBatcher(
        docs, epochs=0.5, seed=0, batch_size=8, context_len=CONTEXT, budget=Budget(steps=10**6)
    )
    drain(epochs)
    assert epochs.end_reason(epochs.cursor) == ("epochs", "ran its 0.5 epochs")
