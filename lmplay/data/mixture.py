"""Draw a stage's documents from several datasets in fixed proportions of target tokens.

`MixtureBatcher` serves batches as `StageBatcher` does (same cuts at sentence boundaries, same
run-ups, every piece of a document in a row), but the next document comes from the dataset
furthest behind its share: the one whose target tokens drawn so far, divided by its weight, are
fewest (ties to the first named). Within a dataset, documents follow a seeded permutation per
pass. The realised proportions are therefore the weights to within one document, with no
randomness beyond the permutations, and the cursor is a handful of integers.

A dataset that runs out is re-permuted and repeated (its pass count rises) unless `repeat` is
off; then the stage ends once a dataset has no document left. "Every token once" holds per pass
over a dataset: a pass trains each of its target tokens exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmplay.data.batcher import (
    Documents,
    SampleBatches,
    check_batcher_state,
    check_counters,
    cut_row,
)
from lmplay.data.budget import BatcherCounters, Budget
from lmplay.data.samples import Sample

MIXTURE_STATE_VERSION = 1


@dataclass
class MixCursor:
    passes: list[int]  # completed passes over each dataset
    positions: list[int]  # index into each dataset's current permutation
    drawn: list[int]  # target tokens drawn from each dataset (whole documents)
    current: int = -1  # the dataset of the document being cut; -1: choose the next
    piece: int = 0  # sample index within the current document
    counters: BatcherCounters = field(default_factory=BatcherCounters)


class MixtureBatcher(SampleBatches):
    """Deterministic batches drawn from `documents.datasets` in proportions `weights`."""

    def __init__(
        self,
        documents: Documents,
        weights: Sequence[float],
        *,
        repeat: bool,
        seed: int,
        batch_size: int,
        context_len: int,
        budget: Budget,
        epochs: float = math.inf,
        run_up_max: int | None = None,
    ) -> None:
        sizes = [len(d) for d in documents.datasets]
        empty = [name for name, size, w in zip(documents.names, sizes, weights) if w and not size]
        if empty:
            raise ValueError(f"dataset '{empty[0]}' of the mixture has no training documents")
        self.documents = documents
        self.weights = [float(w) for w in weights]
        self.repeat = repeat
        self.seed = seed
        self.batch_size = batch_size
        self.context_len = context_len
        self.run_up_max = run_up_max if run_up_max is not None else max(1, context_len // 4)
        self.epochs = epochs
        self.sizes = sizes
        self.budget = _with_epoch_tokens(budget, epochs, documents)
        n = len(sizes)
        self.cursor = MixCursor([0] * n, [0] * n, [0] * n)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._pieces: tuple[int, list[Sample]] | None = None

    def finished_at(self, cursor: MixCursor) -> bool:
        return self.budget.reached(cursor.counters) is not None or self._ran_out(cursor) is not None

    def end_reason(self, cursor: MixCursor) -> tuple[str, str]:
        which = self.budget.reached(cursor.counters)
        if which is not None:
            return which, self.budget.message(which)
        name = self._ran_out(cursor)
        return "ran_out", f"dataset '{name}' ran out (the stage says \"repeat\": false)"

    def _ran_out(self, cursor: MixCursor) -> str | None:
        """The first dataset with no document left, between documents (without repeat)."""
        if self.repeat or cursor.current >= 0:
            return None
        for name, position, size, weight in zip(
            self.documents.names, cursor.positions, self.sizes, self.weights
        ):
            if weight and position >= size:
                return name
        return None

    def epochs_done(self, cursor: MixCursor) -> float:
        """Target tokens drawn, in passes over all the mixed datasets together."""
        return sum(cursor.drawn) / max(1, int(self.documents.truth_lengths().sum()))

    def progress(self, cursor: MixCursor) -> tuple[int, int, str]:
        options = self.budget.fractions(cursor.counters)
        if not self.repeat:  # the dataset nearest to running out
            for position, size, weight in zip(cursor.positions, self.sizes, self.weights):
                if weight:
                    options.append((position / size, position, size, "doc"))
        return max(options)[1:]

    def planned_tokens(self) -> int:
        """Target tokens the stage will train: its budget, or until a dataset runs out."""
        planned = self.budget.tokens if self.budget.tokens is not None else math.inf
        if not self.repeat:
            lengths, offsets, total = self.documents.truth_lengths(), self.documents.offsets, 0.0
            share = [w / sum(self.weights) for w in self.weights]
            for i, weight in enumerate(share):
                if weight:
                    held = int(lengths[offsets[i] : offsets[i + 1]].sum())
                    total = held / weight if not total else min(total, held / weight)
            planned = min(planned, total)
        return int(planned)

    def _take_sample(self) -> Sample:
        cursor = self.cursor
        if cursor.current < 0:
            self._choose(cursor)
        which = cursor.current
        doc = self._doc(which, cursor.passes[which], cursor.positions[which])
        pieces = self._document_pieces(doc)
        sample = pieces[cursor.piece]
        cursor.piece += 1
        if cursor.piece == len(pieces):
            cursor.piece, cursor.current = 0, -1
            cursor.positions[which] += 1
            if cursor.positions[which] == self.sizes[which] and self.repeat:
                cursor.passes[which] += 1
                cursor.positions[which] = 0
        return sample

    def _choose(self, cursor: MixCursor) -> None:
        behind = min(
            (drawn / weight, i)
            for i, (drawn, weight) in enumerate(zip(cursor.drawn, self.weights))
            if weight
        )
        which = behind[1]
        doc = self._doc(which, cursor.passes[which], cursor.positions[which])
        cursor.current = which
        cursor.drawn[which] += sum(len(piece.truth) for piece in self._document_pieces(doc))

    def _doc(self, which: int, epoch: int, position: int) -> int:
        """The global document index of `position` in pass `epoch` over dataset `which`."""
        key = (which, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != which}
            rng = np.random.default_rng([self.seed, which, epoch])
            self._orders[key] = rng.permutation(self.sizes[which])
        return int(self.documents.offsets[which] + self._orders[key][position])

    def _document_pieces(self, doc: int) -> list[Sample]:
        if self._pieces is None or self._pieces[0] != doc:
            self._pieces = (doc, cut_row(self.documents, doc, self.context_len, self.run_up_max))
        return self._pieces[1]

    def state_dict(self) -> dict[str, Any]:
        return self.cursor_state(self.cursor)

    def cursor_state(self, cursor: MixCursor) -> dict[str, Any]:
        return {
            "version": MIXTURE_STATE_VERSION,
            "kind": "mixture",
            "passes": list(cursor.passes),
            "positions": list(cursor.positions),
            "drawn": list(cursor.drawn),
            "current": cursor.current,
            "piece": cursor.piece,
            "counters": dict(cursor.counters.__dict__),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_mixture_state(state)
        if len(state["positions"]) != len(self.sizes):
            raise ValueError(
                f"mixture state has {len(state['positions'])} datasets, the stage {len(self.sizes)}"
            )
        self.cursor = MixCursor(
            list(state["passes"]),
            list(state["positions"]),
            list(state["drawn"]),
            state["current"],
            state["piece"],
            BatcherCounters(**state["counters"]),
        )


def _with_epoch_tokens(budget: Budget, epochs: float, documents: Documents) -> Budget:
    """A mixed stage's `epochs` count target tokens: epochs x all its datasets hold together."""
    if math.isinf(epochs):
        return budget
    held = math.ceil(epochs * int(documents.truth_lengths().sum()))
    tokens = held if budget.tokens is None else min(budget.tokens, held)
    return Budget(tokens=tokens, steps=budget.steps)


def check_stage_state(state: Any) -> None:
    """ValueError naming what is wrong with a stored position of either kind of batcher."""
    if isinstance(state, dict) and state.get("kind") == "mixture":
        check_mixture_state(state)
    else:
        check_batcher_state(state)


def check_mixture_state(state: Any) -> None:
    """ValueError naming what is wrong with a stored mixture position."""
    if not isinstance(state, dict) or state.get("version") != MIXTURE_STATE_VERSION:
        raise ValueError("mixture state is not a supported version")
    lists = [state.get(key) for key in ("passes", "positions", "drawn")]
    if not all(isinstance(v, list) and all(_is_count(x) for x in v) for v in lists):
        raise ValueError("mixture passes, positions and drawn must be lists of integers >= 0")
    if len({len(v) for v in lists}) != 1:
        raise ValueError("mixture passes, positions and drawn must be equally long")
    current = state.get("current")
    if (
        not isinstance(current, int)
        or isinstance(current, bool)
        or not -1 <= current < len(lists[0])
    ):
        raise ValueError(f"mixture current must be a dataset index or -1, got {current!r}")
    if not _is_count(state.get("piece")):
        raise ValueError(f"mixture piece must be an integer >= 0, got {state.get('piece')!r}")
    check_counters(state.get("counters"))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
