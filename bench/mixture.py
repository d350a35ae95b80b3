"""The cost of mixing: a mixed stage's data path against an unmixed one over the same data.

    python bench/mixture.py                       # plan curriculum_wsd's 'stable' datasets
    python bench/mixture.py --batches 200 --context-len 256

Both batchers cut the same documents at the same context into batches of the same size; the
unmixed one in proportion to size (`"datasets"`), the mixed one by the stage's weights (`"mix"`).
Reported: target tokens per second of batches made (what a step waits for when the prefetcher
falls behind), and the seconds from building a stage's batcher to its first batch (a stage
switch: documents, per-document token counts for the schedule, first cuts). The model step is
the same code either way, so the data path is where mixing can cost anything.
"""

from __future__ import annotations

import argparse
import time

from lmplay.data.batcher import StageBatcher
from lmplay.data.budget import Budget
from lmplay.data.mixture import MixtureBatcher
from lmplay.plan.datasets import PlanData
from lmplay.plan.registry import load_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="curriculum_wsd")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = PlanData(load_plan(args.plan))
    stage = next(s for s in data.plan.stages if s.mix)
    docs = data.stage_documents(stage)  # loaded and tokenized once, outside the timings
    for name in stage.datasets:
        data.split(name)

    def unmixed() -> StageBatcher:
        return StageBatcher(
            docs, epochs=1000, seed=0, batch_size=args.batch_size, context_len=args.context_len
        )

    def mixed() -> MixtureBatcher:
        fresh = data.stage_documents(stage)  # no cached token counts: a real stage switch
        batcher = MixtureBatcher(
            fresh, [w for _, w in stage.mix], repeat=True, seed=0, batch_size=args.batch_size,
            context_len=args.context_len, budget=Budget(tokens=10**12),
        )  # fmt: skip
        batcher.planned_tokens()
        return batcher

    for label, build in (("unmixed", unmixed), ("mixed", mixed)) * args.repeats:
        started = time.perf_counter()
        batcher = build()
        batcher.next_batch()
        first = time.perf_counter() - started
        tokens, started = 0, time.perf_counter()
        for _ in range(args.batches):
            tokens += sum(len(s.truth) for s in batcher.next_batch() or [])
        seconds = time.perf_counter() - started
        print(f"{label:8} {tokens / seconds:12,.0f} target tokens/s   first batch {first:.3f} s")


if __name__ == "__main__":
    main()
