"""lmp_trainer's training step side by side with a bare PyTorch loop and Hugging Face Trainer.

    python bench/compare.py                         # CPU: eager and --amp, 3 alternating rounds
    python bench/compare.py --compile               # also torch.compile variants (slow on CPU)
    python bench/compare.py --device cuda --preset gpt2-small --compile   # GPU, MFU of GPT-2 small
    python bench/compare.py --step-memory           # peak RAM of one gpt2ish step, 16 x 1024

Needs `pip install 'transformers[torch]'` (transformers and accelerate) for the Hugging Face
column. Every measurement runs in its own subprocess (so its peak RSS is its own), and the
configurations alternate round by round so that machine noise hits all of them alike. All three
train the same shape (GPT-2 architecture, GPT-2 vocabulary) on the same fixed batch of full rows
with AdamW (lr 3e-4, weight decay 0.01), gradient clipping at 1.0 and the same tokens per step:

- lmplay: `build_session` + `train_step` (chunked head loss, one host read per step), its
  mini-batches prepared ahead as the trainer's prefetcher does;
- bare: lmplay's GPT2ish module, full-vocabulary logits and `F.cross_entropy`, `loss.item()`
  each step (as nanoGPT logs);
- hf: `transformers.Trainer` on `GPT2LMHeadModel`, timed by a callback around each step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from lmplay.models.registry import ModelArgs

PRESETS = {
    # name: (blocks, width, heads, context, rows per step)
    "small": (4, 256, 4, 256, 8),
    "gpt2-small": (12, 768, 12, 1024, 16),
}
VOCAB = 50257
LR, WEIGHT_DECAY, GRAD_CLIP = 3e-4, 0.01, 1.0
VARIANTS = ("eager", "amp", "compile", "amp+compile")


@dataclass(frozen=True)
class Shape:
    blocks: int
    width: int
    heads: int
    context: int
    rows: int
    mini_rows: int

    @property
    def tokens_per_step(self) -> int:
        return self.rows * self.context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--rows", type=int, help="rows per optimizer step (default: preset's)")
    parser.add_argument("--mini-rows", type=int, help="rows per forward (default: all)")
    parser.add_argument("--context", type=int, help="tokens per row (default: preset's)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variants")
    parser.add_argument("--no-amp", action="store_true", help="skip the bf16 autocast variants")
    parser.add_argument("--only", nargs="*", default=["lmplay", "bare", "hf"])
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        help="these variants only, e.g. amp+compile for more rounds of the best settings "
        "(default: eager and amp, plus compile and amp+compile with --compile)",
    )
    parser.add_argument("--peak-tflops", type=float, help="peak for MFU (default: GPU table)")
    parser.add_argument("--step-memory", action="store_true", help="peak RAM of one step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    blocks, width, heads, context, rows = PRESETS[args.preset]
    rows, context = args.rows or rows, args.context or context
    shape = Shape(blocks, width, heads, context, rows, args.mini_rows or rows)
    if args.child:
        kind, variant = args.child.split(":")
        print(json.dumps(run_child(kind, variant, shape, args)))
    elif args.step_memory:
        step_memory(args)
    else:
        compare(shape, args)


def compare(shape: Shape, args: argparse.Namespace) -> None:
    variants = ["eager", *([] if args.no_amp else ["amp"]), *(["compile"] if args.compile else [])]
    if args.compile and not args.no_amp:
        variants.append("amp+compile")
    variants = args.variants or variants
    configs = [f"{kind}:{variant}" for variant in variants for kind in args.only]
    results: dict[str, list[dict]] = {config: [] for config in configs}
    loads = [os.getloadavg()[0]]
    for round_index in range(args.rounds):
        for config in configs:
            result = run_in_subprocess(config, args)
            results[config].append(result)
            loads.append(os.getloadavg()[0])
            print(
                f"round {round_index + 1} {config:<18} {result['tokens_per_s']:>10,.0f} tokens/s "
                f"peak RSS {result['peak_rss_mb']:>7,.0f} MB  load {loads[-1]:.2f}",
                file=sys.stderr,
            )
    report(shape, args, results, loads)


def run_in_subprocess(config: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", config, *child_flags(args)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--device", args.device, "--preset", args.preset, "--steps", str(args.steps)]
    flags += ["--warmup", str(args.warmup)]
    for name in ("rows", "mini_rows", "context", "peak_tflops"):
        value = getattr(args, name)
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def report(shape: Shape, args: argparse.Namespace, results: dict, loads: list[float]) -> None:
    import torch

    from lmplay.models import get_experiment
    from lmplay.train.mfu import peak_flops

    device = torch.device(args.device)
    flops = get_experiment("gpt2ish").flops_per_token(model_args(shape))
    peak = peak_flops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"\n{shape.blocks} blocks x {shape.width} wide, context {shape.context}, vocab {VOCAB}; "
        f"{shape.rows} rows x {shape.context} = {shape.tokens_per_step:,} tokens per step "
        f"(mini-batches of {shape.mini_rows} rows); AdamW; device {name}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of "
        f"{args.steps - args.warmup} timed steps; load average {min(loads):.2f}-{max(loads):.2f}"
    )
    header = f"{'config':<18} {'tokens/s':>10} {'peak MB':>8} {'vs bare':>8} {'vs hf':>6}"
    print(header + (f" {'MFU':>6}" if peak else ""))
    medians = {c: statistics.median(r["tokens_per_s"] for r in rs) for c, rs in results.items()}
    for config, runs in results.items():
        variant = config.split(":")[1]
        rate = medians[config]
        memory = max(r["peak_memory_mb"] for r in runs)
        ratios = [
            f"{rate / medians[other]:>.2f}x" if other in medians else "-"
            for other in (f"bare:{variant}", f"hf:{variant}")
        ]
        line = f"{config:<18} {rate:>10,.0f} {memory:>8,.0f} {ratios[0]:>8} {ratios[1]:>6}"
        print(line + (f" {flops * rate / peak:>6.1%}" if peak else ""))
    best = {
        kind: max(v for c, v in medians.items() if c.startswith(kind + ":")) for kind in args.only
    }
    if "lmplay" in best:
        for other in ("bare", "hf"):
            if other in best:
                print(f"best lmplay / best {other}: {best['lmplay'] / best[other]:.2f}x")


def model_args(shape: Shape) -> ModelArgs:
    from lmplay.models.registry import ModelArgs

    return ModelArgs(shape.blocks, shape.width, shape.heads, shape.context, VOCAB)


def fixed_tokens(shape: Shape, rows: int) -> torch.Tensor:
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (rows, shape.context + 1), generator=generator)


def run_child(kind: str, variant: str, shape: Shape, args: argparse.Namespace) -> dict:
    import torch

    device = torch.device(args.device)
    amp, compiled = "amp" in variant, "compile" in variant
    tokens = fixed_tokens(shape, shape.rows)
    if kind == "lmplay":
        checkpointing = "checkpointing" in variant
        times = lmplay_steps(shape, tokens, device, amp, compiled, args.steps, checkpointing)
    else:
        runner = {"bare": bare_steps, "hf": hf_steps}[kind]
        times = runner(shape, tokens, device, amp, compiled, args.steps)
    timed = times[args.warmup :]
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = peak_rss if device.type != "cuda" else torch.cuda.max_memory_allocated() / 2**20
    return {
        "tokens_per_s": shape.tokens_per_step / statistics.median(timed),
        "peak_rss_mb": peak_rss,
        "peak_memory_mb": peak,
        "step_seconds": timed,
    }


def synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def lmplay_steps(
    shape: Shape,
    tokens: torch.Tensor,
    device: torch.device,
    amp: bool,
    compiled: bool,
    steps: int,
    checkpointing: bool = False,
) -> list[float]:
    from lmplay.config import BatchConfig, ModelConfig, RunConfig, RunIOConfig, SystemConfig
    from lmplay.data.samples import Sample
    from lmplay.data.tokenizer import EOT_ID
    from lmplay.train.session import build_session
    from lmplay.train.step import prepare_mini_batches, train_step

    cfg = RunConfig(
        model=ModelConfig(
            exp="gpt2ish",
            num_blocks=shape.blocks,
            embed_dim=shape.width,
            num_heads=shape.heads,
            context_len=shape.context,
        ),
        batch=BatchConfig(batch_size=shape.rows, mini_batch_size=shape.mini_rows),
        io=RunIOConfig(out_dir=tempfile.mkdtemp(prefix="lmplay-compare-")),
        system=SystemConfig(
            device=str(device),
            amp=amp,
            compile_model=compiled,
            activation_checkpointing=checkpointing,
        ),
    )
    cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip = LR, WEIGHT_DECAY, GRAD_CLIP
    s = build_session(cfg)
    # Full rows: the first token is the prompt (EOT in real samples), the rest is trained on.
    samples = [Sample((EOT_ID,), tuple(row[1:].tolist())) for row in tokens]
    pin = device.type == "cuda"
    times = []
    for _ in range(steps):
        mini_batches = prepare_mini_batches(samples, shape.mini_rows, s.built.pack_len, pin)
        started = time.perf_counter()
        train_step(
            s.train_model,
            s.optimizer,
            samples,
            mini_batches,  # prepared ahead, as the trainer's prefetcher does
            lr=LR,
            grad_clip=GRAD_CLIP,
            placement=s.placement,
        )
        times.append(time.perf_counter() - started)  # train_step has read its result: synced
    return times


def bare_steps(
    shape: Shape, tokens: torch.Tensor, device: torch.device, amp: bool, compiled: bool, steps: int
) -> list[float]:
    import torch
    import torch.nn.functional as F

    from lmplay.models import get_experiment

    torch.manual_seed(0)
    model = get_experiment("gpt2ish").build(model_args(shape)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def mean_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = model.lm_head(model(xb))  # (B, T, V): every row's full-vocabulary logits
        return F.cross_entropy(logits.float().view(-1, VOCAB), yb.reshape(-1))

    loss_fn = torch.compile(mean_loss) if compiled else mean_loss
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    dtype = torch.bfloat16 if amp else None
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        for start in range(0, shape.rows, shape.mini_rows):
            xb, yb = x[start : start + shape.mini_rows], y[start : start + shape.mini_rows]
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                loss = loss_fn(xb, yb)
            (loss * xb.size(0) / shape.rows).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - started)
    return times


def hf_steps(
    shape: Shape, tokens: torch.Tensor, device: torch.device, amp: bool, compiled: bool, steps: int
) -> list[float]:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=shape.context,
        n_embd=shape.width,
        n_layer=shape.blocks,
        n_head=shape.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    rows = [{"input_ids": row[:-1], "labels": row[:-1]} for row in tokens]
    dataset = rows * steps
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__) -> None:
            synchronize(device)
            times.append(time.perf_counter() - self.started)

    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-compare-"),
        per_device_train_batch_size=shape.mini_rows,
        gradient_accumulation_steps=shape.rows // shape.mini_rows,
        max_steps=steps,
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=GRAD_CLIP,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=amp,
        torch_compile=compiled,
        use_cpu=device.type == "cpu",
    )
    Trainer(model=model, args=training, train_dataset=dataset, callbacks=[StepTimer()]).train()
    return times


def step_memory(args: argparse.Namespace) -> None:
    """Peak RSS of one gpt2ish (4 x 256) step at 16 rows x 1024 tokens, by /usr/bin/time -v."""
    variants = {
        "lmplay (chunked head loss)": "lmplay:eager",
        "lmplay --activation-checkpointing": "lmplay:checkpointing",
        "bare loop (full-vocabulary logits)": "bare:eager",
    }
    flags = ["--preset", "small", "--rows", "16", "--steps", "1", "--warmup", "0"]
    print("one step of gpt2ish 4 x 256, mini-batch 16 x context 1024, fp32, CPU")
    for name, config in variants.items():
        command = [
            "/usr/bin/time", "-v", sys.executable, __file__, "--child", config, "--context", "1024",
            *flags,
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
        kb = next(
            int(line.split(":")[1])
            for line in out.stderr.splitlines()
            if "Maximum resident set size" in line
        )
        print(f"{name:<36} peak RSS {kb / 2**20:.2f} GiB  load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
