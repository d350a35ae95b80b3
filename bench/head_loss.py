"""The output head's loss and gradients alone: lmplay's chunked loss against full logits.

    python bench/head_loss.py                        # 2,048 positions, width 256, CPU
    python bench/head_loss.py --device cuda --positions 16384 --width 768

Both compute the summed cross-entropy of `hidden @ W.T` over GPT-2's vocabulary and its
gradients with respect to the hidden states and W, in float32 and under bf16 autocast:

- chunked: `lmplay.train.loss.chunked_head_loss` (its default chunk of 1,024 positions);
- full: `F.cross_entropy` on the full (positions, vocabulary) logits, as a bare loop computes it.

They alternate within each round, so machine noise hits both alike; the median time of the
rounds is printed with the ratio.
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

    def chunked(amp: bool) -> float:
        h = hidden.clone().requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = chunked_head_loss(h.unsqueeze(0), head, targets.unsqueeze(0)).loss_sum
        loss.backward()
        return loss.item()

    def full(amp: bool) -> float:
        h = hidden.clone().requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(head(h).float(), targets, reduction="sum")
        loss.backward()
        return loss.item()

    print(f"{args.positions:,} positions x width {args.width} x vocabulary {VOCAB:,}, {device}")
    for amp in (False, True):
        times: dict[str, list[float]] = {"chunked": [], "full": []}
        for _ in range(args.rounds + 1):  # the first round warms up and is dropped
            for name, fn in (("chunked", chunked), ("full", full)):
                times[name].append(timed(fn, amp, head, device))
        chunked_s, full_s = (statistics.median(times[name][1:]) for name in ("chunked", "full"))
        label = "bf16 autocast" if amp else "float32"
        print(
            f"{label:14s} chunked {chunked_s * 1000:8.1f} ms  full {full_s * 1000:8.1f} ms  "
            f"full / chunked {full_s / chunked_s:.2f}x"
        )


def timed(
    fn: Callable[[bool], float], amp: bool, head: torch.nn.Module, device: torch.device
) -> float:
    head.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(amp)  # its .item() waits for the device
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
