"""Cut documents into samples at sentence boundaries and serve them as deterministic batches.

A document longer than the context becomes consecutive samples. The first sample of a document
starts with `<|endoftext|>` (plus the document's own prompt, if any) so that its first token is a
target too; each continuation starts with a *run-up*: the tail of the sentence before the cut,
given as prompt and not trained on. Cuts fall at sentence ends, and inside a sentence only when
the sentence alone does not fit. Continuations carry over into the next batch, so every truth
token of an epoch is a target exactly once.

A sample, and a batch of them as tensors, are defined in `lmplay.data.samples`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmplay.data.budget import BatcherCounters, Budget, truth_lengths
from lmplay.data.samples import Sample
from lmplay.data.tokenizer import EOT_ID

# Kept importable from here until lmplay/train/step.py imports them from lmplay.data.samples.

BATCHER_STATE_VERSION = 1


def cut_document(
    prompt_ids: Sequence[int],
    truth_ids: Sequence[int],
    sentence_ends: Sequence[int],
    *,
    context_len: int,
    run_up_max: int,
    doc: int = -1,
) -> list[Sample]:
    """Consecutive samples covering every truth token once, each at most context_len + 1 long.

    A sample of n tokens trains n - 1 positions, so context_len + 1 tokens fill the context.
    """
    capacity = context_len + 1
    min_truth = max(1, capacity // 4)
    prompt = (EOT_ID, *prompt_ids)
    truncated = max(0, len(prompt) - (capacity - min_truth))
    prompt = prompt[truncated:]
    boundaries = [0, *sentence_ends]
    samples: list[Sample] = []
    start = 0
    while start < len(truth_ids):
        room = capacity - len(prompt)
        limit = start + room
        ends_at = bisect.bisect_right(sentence_ends, limit) - 1
        end = sentence_ends[ends_at] if ends_at >= 0 else 0
        mid_sentence = end <= start
        if mid_sentence:
            end = min(limit, len(truth_ids))
        samples.append(
            Sample(tuple(prompt), tuple(truth_ids[start:end]), doc, start, truncated, mid_sentence)
        )
        truncated = 0
        sentence_start = boundaries[bisect.bisect_left(boundaries, end) - 1]
        prompt = tuple(truth_ids[max(sentence_start, end - run_up_max) : end])
        start = end
    return samples


class Documents:
    """Several tokenized datasets seen as one indexable list of documents."""

    def __init__(self, datasets: Sequence[Any], names: Sequence[str] | None = None) -> None:
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [str(i) for i in range(len(datasets))]
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self._truth_lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        which = self.source_of(index)
        return self.datasets[which][int(index - self.offsets[which])]

    def source_of(self, index: int) -> int:
        """Which of the datasets holds document `index`."""
        return int(np.searchsorted(self.offsets, index, side="right")) - 1

    def truth_lengths(self) -> np.ndarray:
        """Target tokens of every document (its truth tokens), computed once."""
        if self._truth_lengths is None:
            parts = [truth_lengths(d) for d in self.datasets]
            self._truth_lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._truth_lengths


@dataclass
class _Cursor:
    epoch: int = 0
    position: int = 0  # index into the epoch's document order
    piece: int = 0  # sample index within the current document
    counters: BatcherCounters = field(default_factory=BatcherCounters)


class SampleBatches:
    """Logical batches of `batch_size` samples from `_take_sample()` until `finished_at(cursor)`:
    what every batcher of a stage shares (the plain one here, the mixture's in `mixture.py`)."""

    batch_size: int
    cursor: Any

    def _take_sample(self) -> Sample:
        raise NotImplementedError

    def finished_at(self, cursor: Any) -> bool:
        raise NotImplementedError

    def next_batch(self) -> list[Sample] | None:
        """The next logical batch, or None when the stage is done (the last may be short)."""
        samples: list[Sample] = []
        while len(samples) < self.batch_size and not self.finished:
            samples.append(self._take_sample())
        if not samples:
            return None
        self.cursor.counters.add(samples)
        return samples

    @property
    def finished(self) -> bool:
        return self.finished_at(self.cursor)


class StageBatcher(SampleBatches):
    """Deterministic batches over `epochs` (fractional allowed) of a stage's documents.

    The cursor is (epoch, position in the epoch's shuffled order, piece of the document), so a
    resume recomputes one permutation and one document's cuts, not the batches before it.
    """

    def __init__(
        self,
        documents: Documents,
        *,
        epochs: float,
        seed: int,
        batch_size: int,
        context_len: int,
        run_up_max: int | None = None,
        budget: Budget | None = None,
    ) -> None:
        if len(documents) == 0:
            raise ValueError("a stage needs at least one document")
        self.documents = documents
        self.epochs = epochs  # math.inf: as many as the budget takes
        self.budget = budget or Budget()
        self.seed = seed
        self.batch_size = batch_size
        self.context_len = context_len
        self.run_up_max = run_up_max if run_up_max is not None else max(1, context_len // 4)
        self.cursor = _Cursor()
        self._order: tuple[int, np.ndarray] | None = None
        self._pieces: tuple[int, list[Sample]] | None = None

    def epoch_length(self, epoch: int) -> int:
        """Documents in `epoch`; the last epoch of a fractional count is partial."""
        if math.isinf(self.epochs):
            return len(self.documents)
        full_epochs = math.floor(self.epochs)
        if epoch < full_epochs:
            return len(self.documents)
        if epoch == full_epochs:
            return math.ceil((self.epochs - full_epochs) * len(self.documents))
        return 0

    def finished_at(self, cursor: _Cursor) -> bool:
        """The stage is done at `cursor`: its epochs ran out or a budget is reached."""
        ran_out = cursor.position >= self.epoch_length(cursor.epoch)
        return ran_out or self.budget.reached(cursor.counters) is not None

    def end_reason(self, cursor: _Cursor) -> tuple[str, str]:
        """(reason keyword, sentence) for a stage that is finished at `cursor`."""
        which = self.budget.reached(cursor.counters)
        if which is not None:
            return which, self.budget.message(which)
        return "epochs", f"ran its {self.epochs:g} epochs"

    def epochs_done(self, cursor: _Cursor) -> float:
        """Passes over the stage's documents, in whole documents taken."""
        return cursor.epoch + cursor.position / len(self.documents)

    def progress(self, cursor: _Cursor) -> tuple[int, int, str]:
        """(done, total, unit) of the limit nearest to ending the stage: progress bars use it."""
        options = self.budget.fractions(cursor.counters)
        if not math.isinf(self.epochs):
            total = sum(self.epoch_length(e) for e in range(math.ceil(self.epochs)))
            done = sum(self.epoch_length(e) for e in range(cursor.epoch)) + cursor.position
            options.append((done / total, done, total, "doc"))
        return max(options)[1:]

    def planned_tokens(self) -> int:
        """Target tokens the stage will train: its tokens budget or what its epochs hold."""
        lengths = self.documents.truth_lengths()
        if math.isinf(self.epochs):
            held = math.inf
        else:
            full = math.floor(self.epochs)
            partial = (
                self._permutation(full)[: self.epoch_length(full)] if full < self.epochs else []
            )
            held = full * int(lengths.sum()) + int(lengths[partial].sum())
        budget = self.budget.tokens if self.budget.tokens is not None else math.inf
        return int(min(held, budget))

    def cursor_state(self, cursor: _Cursor) -> dict[str, Any]:
        return cursor_state(cursor)

    def _take_sample(self) -> Sample:
        cursor = self.cursor
        doc = int(self._epoch_order(cursor.epoch)[cursor.position])
        pieces = self._document_pieces(doc)
        sample = pieces[cursor.piece]
        cursor.piece += 1
        if cursor.piece == len(pieces):
            cursor.piece = 0
            cursor.position += 1
            if cursor.position == self.epoch_length(cursor.epoch):
                cursor.epoch += 1
                cursor.position = 0
        return sample

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self._permutation(epoch))
        return self._order[1]

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.documents))

    def _document_pieces(self, doc: int) -> list[Sample]:
        if self._pieces is None or self._pieces[0] != doc:
            self._pieces = (doc, cut_row(self.documents, doc, self.context_len, self.run_up_max))
        return self._pieces[1]

    def state_dict(self) -> dict[str, Any]:
        return cursor_state(self.cursor)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_batcher_state(state)
        if state.get("kind") is not None:
            raise ValueError(f"a {state['kind']} position does not fit an unmixed stage")
        self.cursor = _Cursor(
            state["epoch"], state["position"], state["piece"], BatcherCounters(**state["counters"])
        )


def check_batcher_state(state: Any) -> None:
    """ValueError naming what is wrong with a stored batcher position (see `state_dict`)."""
    if not isinstance(state, dict):
        raise ValueError(f"batcher state must be a dict, got {type(state).__name__}")
    if state.get("version") != BATCHER_STATE_VERSION:
        raise ValueError(f"batcher state version {state.get('version')} is not supported")
    for key in ("epoch", "position", "piece"):
        if not _is_count(state.get(key)):
            raise ValueError(f"batcher {key} must be an integer >= 0, got {state.get(key)!r}")
    check_counters(state.get("counters"))


def check_counters(counters: Any) -> None:
    expected = set(BatcherCounters.__dataclass_fields__)
    if not isinstance(counters, dict) or not set(counters) <= expected:
        got = sorted(counters) if isinstance(counters, dict) else type(counters).__name__
        raise ValueError(f"batcher counters must be some of {sorted(expected)}, got {got}")
    bad = [key for key, value in counters.items() if not _is_count(value)]
    if bad:
        raise ValueError(f"batcher counter {bad[0]} must be an integer >= 0")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def cursor_state(cursor: _Cursor) -> dict[str, Any]:
    """A batcher's saved state: where its cursor is, and its counters."""
    return {
        "version": BATCHER_STATE_VERSION,
        "epoch": cursor.epoch,
        "position": cursor.position,
        "piece": cursor.piece,
        "counters": dict(cursor.counters.__dict__),
    }


def validation_samples(documents: Documents, *, count: int, context_len: int) -> list[Sample]:
    """The first `count` samples of the documents in order: a fixed validation set."""
    samples: list[Sample] = []
    for doc in range(len(documents)):
        row = documents[doc]
        samples.extend(
            cut_document(
                row["prompt_ids"],
                row["truth_ids"],
                row["sentence_ends"],
                context_len=context_len,
                run_up_max=max(1, context_len // 4),
                doc=doc,
            )
        )
        if len(samples) >= count:
            break
    return samples[:count]


def cut_row(documents: Documents, doc: int, context_len: int, run_up_max: int) -> list[Sample]:
    """Document `doc` of `documents` cut into samples of `context_len` (see `cut_document`)."""
    row = documents[doc]
    return cut_document(
        row["prompt_ids"],
        row["truth_ids"],
        row["sentence_ends"],
        context_len=context_len,
        run_up_max=run_up_max,
        doc=doc,
    )
