"""Seconds per stats flush when a run already holds N records (the recorder's public API only,
so the same script measures any lmplay version).

    python bench/stats_flush.py                      # 100,000 train records, 20 flushes
    python bench/stats_flush.py --records 10000 --added 5

Fills a recorder with `--records` records shaped like the trainer's, flushes once, then times
`--flushes` flushes that each follow `--added` new records (a flush every 30 s adds a few).
Prints the file size and the median and worst flush.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lmplay.stats.recorder import StatsRecorder


def record(i: int) -> dict[str, object]:
    return {
        "samples": 16 * i,
        "tokens": 3800 * i,
        "steps": i,
        "stage": "shakespeare",
        "loss": 9.1 - i * 1e-5,
        "accuracy": 0.05 + i * 1e-7,
        "lr": 0.0006,
        "grad_norm": 1.2345678,
        "tokens_per_s": 5012.25,
        "padding_ratio": 0.0612,
        "truncation_ratio": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--flushes", type=int, default=20)
    parser.add_argument("--added", type=int, default=1, help="records added before each flush")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.stats.jsonl"
        rec = StatsRecorder(path, run="run", exp="gpt2ish", model="run.lmp", meta={"plan": "x"})
        for i in range(args.records):
            rec.add_train(record(i))
        rec.flush()
        times = []
        for f in range(args.flushes):
            for j in range(args.added):
                rec.add_train(record(args.records + f * args.added + j))
            start = time.perf_counter()
            rec.flush()
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    print(
        f"{args.records:,} records, file {size / 1e6:.1f} MB: flush median "
        f"{statistics.median(times) * 1e3:.2f} ms, worst {max(times) * 1e3:.2f} ms "
        f"({args.flushes} flushes, {args.added} record(s) added before each)"
    )


if __name__ == "__main__":
    main()
