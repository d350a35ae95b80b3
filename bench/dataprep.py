"""Data preparation on a large local corpus: tokenization MB/s and time to the first step.

    python bench/dataprep.py                       # 200 MB corpus in /tmp, 1 vs 2 workers
    python bench/dataprep.py --mb 50 --workers 1 4

Generates (once) a JSONL corpus of English-like text (Zipf-distributed made-up words in
sentences and paragraphs), then runs, each in its own process with its own `datasets` cache:
first runs (nothing cached) for every worker count, then the cached reruns, alternating. Each
run is what `lmp_trainer` does before and through its first step: load the rows (JSON to
Arrow), tokenize them with `--data-workers N`, cut the first batch, validate and train one step
of a tiny model. Reported: seconds per phase, tokenization MB/s, and time to the first step
(process start to the end of step 1, imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FOLDER = Path(tempfile.gettempdir()) / "lmplay-dataprep"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus = args.folder / f"corpus-{args.mb}mb.jsonl"
    if args.child is not None:
        print(json.dumps(run_child(corpus, args.folder, args.child)))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    if not corpus.exists():
        started = time.perf_counter()
        write_corpus(corpus, args.mb * 10**6)
        print(f"wrote {corpus} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    size_mb = corpus.stat().st_size / 1e6
    with open(corpus, "rb") as f:
        documents = sum(1 for _ in f)
    for workers in args.workers:
        shutil.rmtree(cache_folder(args.folder, workers), ignore_errors=True)
    print(
        f"corpus {corpus}: {size_mb:.0f} MB, {documents:,} documents; "
        f"{len(os.sched_getaffinity(0))} cores; torch threads default"
    )
    print(
        f"{'run':<8} {'workers':>7} {'load s':>7} {'tokenize s':>10} {'MB/s':>6} "
        f"{'to first step s':>16} {'load avg':>8}"
    )
    for run in ("first", "cached"):
        for workers in args.workers:
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(workers), "--mb", str(args.mb),
                 "--folder", str(args.folder)],
                capture_output=True, text=True, check=False,
                env={**os.environ, "HF_DATASETS_CACHE": str(cache_folder(args.folder, workers))},
            )  # fmt: skip
            wall = time.perf_counter() - started
            if out.returncode != 0:
                raise SystemExit(f"run with {workers} workers failed:\n{out.stderr[-3000:]}")
            phases = json.loads(out.stdout.strip().splitlines()[-1])
            rate = size_mb / phases["tokenize_s"]
            print(
                f"{run:<8} {workers:>7} {phases['load_s']:>7.1f} {phases['tokenize_s']:>10.1f} "
                f"{rate:>6.1f} {wall:>16.1f} {os.getloadavg()[0]:>8.2f}",
                flush=True,
            )


def cache_folder(folder: Path, workers: int) -> Path:
    return folder / f"hf-cache-{workers}-workers"


def write_corpus(path: Path, size_bytes: int, seed: int = 0) -> None:
    """Documents of 1-12 paragraphs of 3-12 sentences of Zipf-distributed made-up words."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    weights = 1.0 / np.arange(1, 27)
    lengths = rng.integers(1, 11, size=20_000)
    vocab = [
        "".join(rng.choice(letters, size=n, p=weights / weights.sum())) for n in lengths.tolist()
    ]
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            words = rng.choice(len(vocab), size=200_000, p=zipf).tolist()
            sentence_lengths = rng.integers(4, 30, size=20_000).tolist()
            at, paragraphs, sentences = 0, [], []
            for n in sentence_lengths:
                if at + n > len(words):
                    break
                body = " ".join(vocab[w] for w in words[at : at + n])
                sentences.append(body.capitalize() + ".")
                at += n
                if len(sentences) == 8:
                    paragraphs.append(" ".join(sentences))
                    sentences = []
                if len(paragraphs) == 4:
                    line = json.dumps({"text": "\n\n".join(paragraphs)}) + "\n"
                    f.write(line)
                    written += len(line)
                    paragraphs = []


def run_child(corpus: Path, folder: Path, workers: int) -> dict[str, float]:
    from lmplay.config import (
        BatchConfig,
        DataConfig,
        ModelConfig,
        RunConfig,
        RunIOConfig,
        SystemConfig,
    )
    from lmplay.plan.datasets import PlanData, load_rows
    from lmplay.plan.registry import load_plan
    from lmplay.train.session import build_session
    from lmplay.train.trainer import Trainer

    plan_path = folder / "plan.json"
    plan_path.write_text(
        json.dumps(
            {
                "name": "dataprep",
                "seed": 0,
                "datasets": {"corpus": {"files": [str(corpus)], "validation_fraction": 0.001}},
                "stages": [{"name": "main", "datasets": ["corpus"], "epochs": 1}],
            }
        )
    )
    plan = load_plan(str(plan_path))
    started = time.perf_counter()
    load_rows(plan.datasets["corpus"].source)  # JSON to Arrow; cached by `datasets`
    loaded = time.perf_counter()
    data = PlanData(plan, num_proc=workers)
    data.split("corpus")  # reads the rows back from the cache, then tokenizes
    tokenized = time.perf_counter()
    cfg = RunConfig(
        model=ModelConfig(num_blocks=2, embed_dim=32, num_heads=2, context_len=64),
        data=DataConfig(training_plan=str(plan_path), data_workers=workers),
        batch=BatchConfig(batch_size=8, validation_samples=8),
        io=RunIOConfig(out_dir=tempfile.mkdtemp(prefix="dataprep-"), max_steps=1),
        system=SystemConfig(device="cpu"),
    )
    Trainer(build_session(cfg), data).fit()
    return {
        "load_s": loaded - started,
        "tokenize_s": tokenized - loaded,
        "first_step_s": time.perf_counter() - tokenized,
    }


if __name__ == "__main__":
    main()
