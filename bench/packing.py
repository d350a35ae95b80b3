"""Packed rows vs one sample per row on a plan's real batches, side by side in one process.

    python bench/packing.py                                 # plan 'tiny', gpt2ish, 8 batches
    python bench/packing.py --plan curriculum --batches 12 --mini-batch-size 4

Both variants train copies of the same model on the same batches in alternation (so machine
noise hits both alike) and report padded slots, padding ratio, seconds per step and tokens per
second; the losses they log are printed too, as they must agree to float rounding.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from lmplay.config import BatchConfig, DataConfig, ModelConfig, RunConfig, RunIOConfig
from lmplay.train.optim import build_optimizer
from lmplay.train.session import build_session
from lmplay.train.step import prepare_mini_batches, train_step
from lmplay.train.trainer import Trainer


@dataclass
class Variant:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    slots: int = 0
    padding: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="tiny")
    parser.add_argument("--exp", default="gpt2ish")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=None)
    args = parser.parse_args()

    cfg = RunConfig(
        model=ModelConfig(exp=args.exp),
        data=DataConfig(training_plan=args.plan),
        batch=BatchConfig(batch_size=args.batch_size, mini_batch_size=args.mini_batch_size),
        io=RunIOConfig(out_dir=tempfile.mkdtemp()),
    )
    session = build_session(cfg)
    trainer = Trainer(session)
    trainer.batcher = trainer._begin_stage()
    batches = [trainer.batcher.next_batch() for _ in range(args.batches + 1)]
    batches = [b for b in batches if b]
    variants = {"one per row": None, "packed": session.model_args.context_len}
    runs: dict[str, Variant] = {}
    for name in variants:
        model = copy.deepcopy(session.model)
        optimizer, _ = build_optimizer(
            cfg.optim.optimizer,
            model,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay_value(),
            device=session.placement.device,
        )
        runs[name] = Variant(model, optimizer)
    tokens = 0
    for index, samples in enumerate(batches):
        for name, pack_len in variants.items():
            run = runs[name]
            started = time.perf_counter()
            result = train_step(
                run.model,
                run.optimizer,
                samples,
                prepare_mini_batches(samples, cfg.batch.mini_batch(), pack_len),
                lr=None,
                grad_clip=cfg.optim.grad_clip,
                placement=session.placement,
            )
            if index > 0:  # the first step warms up allocators and kernels
                run.times.append(time.perf_counter() - started)
                run.slots += result.padded_slots
                run.padding += result.padding_tokens
            run.losses.append(result.loss)
        if index > 0:
            tokens += result.tokens

    steps = len(batches) - 1
    print(
        f"plan {args.plan}, {args.exp} at context {session.model_args.context_len}, batch "
        f"{cfg.batch.batch_size} in mini-batches of {cfg.batch.mini_batch()}, {steps} timed "
        f"steps, {tokens:,} tokens, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'variant':<12} {'slots':>8} {'padding':>8} {'s/step':>8} {'tokens/s':>9}")
    for name, run in runs.items():
        median = statistics.median(run.times)
        rate = tokens / sum(run.times)
        ratio = run.padding / run.slots
        print(f"{name:<12} {run.slots:>8,} {ratio:>8.3f} {median:>8.2f} {rate:>9,.0f}")
    worst = max(abs(a - b) for a, b in zip(*(r.losses for r in runs.values()), strict=True))
    print(f"largest difference of the logged losses: {worst:.2e}")


if __name__ == "__main__":
    main()
