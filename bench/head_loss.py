"""The output head's loss and gradients alone: lmplay's chunked loss against full logits.

    python bench/head_loss.py                        # 2,048 positions, width 256, CPU
    python bench/head_loss.py --device cuda --positions 16384 --width 768

Each computes the summed cross-entropy of `hidden @ W.T` over GPT-2's vocabulary and its
gradients with respect to the hidden states and W, in float32 and under bf16 autocast:

- chunked: `lmplay.train.loss.chunked_head_loss` (its default chunk of 1,024 positions);
- chunked compiled: the same with `compiled=True` (what `--compile-model` uses);
- full: `F.cross_entropy` on the full (positions, vocabulary) logits, as a bare loop computes it;
- full compiled: that loss function under `torch.compile`.

They alternate within each round, so machine noise hits all alike; the median time of the
rounds is printed, and each one's time over the eager chunked loss's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmplay.train.loss import chunked_head_loss

VOCAB = 50257


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    head = torch.nn.Linear(args.width, VOCAB, bias=False, device=device)
    hidden = torch.randn(args.positions, args.width, device=device)
    targets = torch.randint(0, VOCAB, (args.positions,), device=device)

    def chunked_loss(h: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        return chunked_head_loss(
            h.unsqueeze(0), head, targets.unsqueeze(0), compiled=compiled
        ).loss_sum

    def full_loss(h: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), targets, reduction="sum")

    losses: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "chunked": chunked_loss,
        "chunked compiled": lambda h: chunked_loss(h, compiled=True),
        "full": full_loss,
        "full compiled": torch.compile(full_loss),
    }

    def step(loss_fn: Callable[[torch.Tensor], torch.Tensor], amp: bool) -> float:
        h = hidden.clone().requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(h)
        loss.backward()
        return loss.item()

    print(f"{args.positions:,} positions x width {args.width} x vocabulary {VOCAB:,}, {device}")
    for amp in (False, True):
        times: dict[str, list[float]] = {name: [] for name in losses}
        for _ in range(args.rounds + 1):  # the first round compiles, warms up and is dropped
            for name, loss_fn in losses.items():
                times[name].append(timed(lambda fn=loss_fn, amp=amp: step(fn, amp), head, device))
        medians = {name: statistics.median(runs[1:]) for name, runs in times.items()}
        print("bf16 autocast" if amp else "float32")
        for name, seconds in medians.items():
            ratio = seconds / medians["chunked"]
            print(f"  {name:18s} {seconds * 1000:8.1f} ms  {ratio:.2f}x the chunked loss's time")


def timed(run: Callable[[], float], head: torch.nn.Module, device: torch.device) -> float:
    head.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()  # its .item() waits for the device
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
