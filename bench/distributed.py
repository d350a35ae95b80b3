"""Training tokens per second with 1, 2, ... N processes under torchrun (weak scaling).

    python bench/distributed.py                                   # CPU: 1 and 2 processes
    python bench/distributed.py --device cuda --nprocs 1,2,4,8 \\
        --exp gpt2ish_124m --context-len 1024 --per-rank-batch 8 --amp   # all GPUs of a node

Each world size runs the same command a user would (`torchrun --standalone --nproc-per-node=N
-m lmplay.cli.trainer ...`) for `--steps` optimizer steps on the plan's real batches, with a
global batch of N x `--per-rank-batch` samples (each rank does the same work per step whatever
N is), and reads the tokens/s the trainer records on rank 0 (global tokens of a step over its
wall time, gradient all-reduce included). The first `--warmup` steps are left out; the median
of the rest is reported with the scaling efficiency tokens/s(N) / (N x tokens/s(1)).

The load average is printed beside the figures: on a shared machine other work takes cores
away from the ranks, and the figures mean little when it exceeds the core count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lmplay.stats.runs import load_stats


def run_world(args: argparse.Namespace, nproc: int, out: Path) -> list[float]:
    batch = nproc * args.per_rank_batch
    flags = [
        "--training-plan", args.plan, "--exp", args.exp, "--device", args.device,
        "--batch-size", str(batch), "--mini-batch-size", str(args.mini_batch_size),
        "--max-steps", str(args.warmup + args.steps), "--out-dir", str(out),
        "--validation-interval", str(10**9), "--save-interval", str(10**9),
        "--parallel", args.parallel, "--optimizer-warmup-steps", "0",
    ]  # fmt: skip
    if args.context_len:
        flags += ["--context-len", str(args.context_len)]
    if args.amp:
        flags.append("--amp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", "-m", "lmplay.cli.trainer", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{nproc} processes failed:\n{done.stderr[-3000:]}")
    stats = load_stats(next(out.glob("*.stats.jsonl")))
    return [record["tokens_per_s"] for record in stats.train[args.warmup :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", default="1,2", help="world sizes, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plan", default="tiny")
    parser.add_argument("--exp", default="gpt2ish")
    parser.add_argument("--context-len", type=int, default=None)
    parser.add_argument("--per-rank-batch", type=int, default=8)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--parallel", default="ddp", choices=("ddp", "fsdp"))
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each rank")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()}  (cores: {os.cpu_count()})")
    base = None
    for nproc in [int(n) for n in args.nprocs.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            rates = run_world(args, nproc, Path(folder))
        median = statistics.median(rates)
        base = base or median / nproc
        print(
            f"{nproc} process(es), {args.parallel}, batch {nproc * args.per_rank_batch}: "
            f"{median:,.0f} tokens/s (median of {len(rates)} steps, "
            f"min {min(rates):,.0f}, max {max(rates):,.0f}); "
            f"scaling efficiency {median / (nproc * base):.0%}; load {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
