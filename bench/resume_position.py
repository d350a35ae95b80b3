"""Resume cost of the batcher near the start of a stage vs. deep into it, side by side.

    python bench/resume_position.py                       # 20,000 documents, 15 repeats
    python bench/resume_position.py --documents 100000 --repeats 9

A resume builds a `StageBatcher`, loads a saved cursor and produces the next batch. The cursor
is (epoch, position in the shuffled order, piece of the document), so that cost should not
depend on how far into the stage the run was. The corpus is generated already tokenized (random
token ids, sentences of 3 to 60 tokens, documents of a few to a few thousand tokens), saved as
Arrow and memory-mapped back, and seen through a row selection, as a plan's training split is.
For scale, the script also times replaying batches from the start (what a resume that counts
batches would do) and extrapolates it to the deep position.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import datasets
import numpy as np

from lmplay.data.batcher import Documents, StageBatcher
from lmplay.data.documents import DOCUMENT_FEATURES


def make_corpus(documents: int, folder: str, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {name: [] for name in DOCUMENT_FEATURES}
    for _ in range(documents):
        sentences = rng.integers(3, 61, size=int(rng.lognormal(2.5, 1.0)) + 1)
        ends = np.cumsum(sentences)
        columns["prompt_ids"].append([])
        columns["truth_ids"].append(rng.integers(0, 50256, size=int(ends[-1])).tolist())
        columns["sentence_ends"].append(ends.tolist())
        columns["num_tokens"].append(int(ends[-1]))
    datasets.Dataset.from_dict(columns, features=DOCUMENT_FEATURES).save_to_disk(folder)
    rows = datasets.load_from_disk(folder)
    held_out = np.random.default_rng(seed).permutation(len(rows))[: len(rows) // 50]
    return rows.select(np.setdiff1d(np.arange(len(rows)), held_out))  # like PlanData's split


def cursor_at(batcher: StageBatcher, fraction: float) -> dict:
    """A saved cursor `fraction` of the way through the stage's documents."""
    total = sum(batcher.epoch_length(e) for e in range(int(np.ceil(batcher.epochs))))
    target = int(fraction * total)
    epoch = 0
    while target >= batcher.epoch_length(epoch):
        target -= batcher.epoch_length(epoch)
        epoch += 1
    state = batcher.state_dict()
    state.update(epoch=epoch, position=target, piece=0)
    return state


def resume_seconds(docs: Documents, state: dict, **options) -> float:
    started = time.perf_counter()
    batcher = StageBatcher(docs, **options)
    batcher.load_state_dict(state)
    batch = batcher.next_batch()
    elapsed = time.perf_counter() - started
    assert batch, "the resumed batcher produced no batch"
    return elapsed


def replay_seconds_per_document(docs: Documents, batches: int, **options) -> float:
    batcher = StageBatcher(docs, **options)
    started = time.perf_counter()
    for _ in range(batches):
        batcher.next_batch()
    return (time.perf_counter() - started) / max(1, batcher.cursor.position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-len", type=int, default=256)
    parser.add_argument("--start", type=float, default=0.01, help="near-start position")
    parser.add_argument("--deep", type=float, default=0.9, help="deep position")
    args = parser.parse_args()
    options = dict(
        epochs=args.epochs, seed=1234, batch_size=args.batch_size, context_len=args.context_len
    )
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        docs = Documents([make_corpus(args.documents, folder)])
        tokens = sum(docs.datasets[0]["num_tokens"])
        print(
            f"corpus: {len(docs):,} documents, {tokens:,} tokens "
            f"(generated in {time.perf_counter() - started:.1f} s); "
            f"batch {args.batch_size}, context {args.context_len}, {args.epochs:g} epochs"
        )
        probe = StageBatcher(docs, **options)
        states = {"start": cursor_at(probe, args.start), "deep": cursor_at(probe, args.deep)}
        timings: dict[str, list[float]] = {name: [] for name in states}
        resume_seconds(docs, states["start"], **options)  # warm up imports and page cache
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            for name, state in states.items():
                timings[name].append(resume_seconds(docs, state, **options))
        per_doc = replay_seconds_per_document(docs, 200, **options)
        replay = per_doc * states["deep"]["position"]

    start, deep = (statistics.median(timings[name]) * 1e3 for name in ("start", "deep"))
    for name, fraction in (("start", args.start), ("deep", args.deep)):
        state = states[name]
        spread = max(timings[name]) * 1e3
        print(
            f"resume at {fraction:>4.0%} (epoch {state['epoch']}, document "
            f"{state['position']:,}): median {statistics.median(timings[name]) * 1e3:.2f} ms, "
            f"max {spread:.2f} ms over {args.repeats} repeats"
        )
    print(f"deep / start: {deep / start:.2f}x")
    print(f"replaying batches to the deep position instead: ~{replay:.1f} s (extrapolated)")


if __name__ == "__main__":
    main()
