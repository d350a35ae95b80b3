"""Cut, pack and collate the next logical batch on a background thread while the step runs.

Cutting documents and packing rows is Python work of a few milliseconds per batch; done between
steps, the device waits for it. `PrefetchingBatcher` keeps exactly one batch in preparation
ahead of the one being trained. The batches and their order are the `StageBatcher`'s own; only
the time they are made changes.

Resume stays exact because the position the trainer saves is that of the batches it has been
handed, not of the batcher running ahead: each prepared batch carries a copy of the cursor
taken right after it was cut, and that copy becomes `cursor` when the batch is handed out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from lmplay.data.batcher import StageBatcher
from lmplay.data.mixture import MixtureBatcher
from lmplay.data.samples import Batch, Sample


@dataclass(frozen=True)
class PreparedBatch:
    samples: list[Sample]  # the logical batch, as StageBatcher.next_batch gives it
    mini_batches: list[Batch]  # what `prepare` made of it (collated CPU tensors)
    cursor: Any  # the batcher's cursor right after this batch was cut


class PrefetchingBatcher:
    """A StageBatcher (or MixtureBatcher) whose next batch is cut and prepared on a worker thread.

    `cursor`, `finished` and `state_dict()` describe the batches handed out so far. The step's
    padding counts are added to `cursor.counters` by the caller (they are known only after the
    split); they are carried from each handed-out cursor to the next.
    """

    def __init__(
        self,
        batcher: StageBatcher | MixtureBatcher,
        prepare: Callable[[list[Sample]], list[Batch]],
    ) -> None:
        self._batcher = batcher
        self._prepare = prepare
        self.cursor = copy.deepcopy(batcher.cursor)  # before the worker moves the batcher on
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmplay-prefetch")
        self._pending: Future[PreparedBatch | None] | None = self._pool.submit(self._produce)

    @property
    def documents(self) -> Any:
        return self._batcher.documents

    @property
    def epochs(self) -> float:
        return self._batcher.epochs

    def epochs_done(self) -> float:
        return self._batcher.epochs_done(self.cursor)

    def progress(self) -> tuple[int, int, str]:
        return self._batcher.progress(self.cursor)

    def end_reason(self) -> tuple[str, str]:
        return self._batcher.end_reason(self.cursor)

    def _produce(self) -> PreparedBatch | None:
        samples = self._batcher.next_batch()
        if samples is None:
            return None
        return PreparedBatch(samples, self._prepare(samples), copy.deepcopy(self._batcher.cursor))

    def next_batch(self) -> PreparedBatch | None:
        """The next batch (waiting for it if it is not ready), or None when the stage is done."""
        if self._pending is None:
            return None
        prepared = self._pending.result()  # an error of the worker is raised here
        self._pending = None if prepared is None else self._pool.submit(self._produce)
        if prepared is None:
            return None
        counters, done = prepared.cursor.counters, self.cursor.counters
        counters.padding_tokens, counters.padded_slots = done.padding_tokens, done.padded_slots
        self.cursor = prepared.cursor
        return prepared

    @property
    def finished(self) -> bool:
        return self._batcher.finished_at(self.cursor)

    def state_dict(self) -> dict[str, Any]:
        return self._batcher.cursor_state(self.cursor)

    def close(self) -> None:
        """Stop preparing; a batch being cut is finished and dropped."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._pool.shutdown(wait=True)

    def __enter__(self) -> PrefetchingBatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
