"""The start-of-run summary: architecture, sizes, parameters, weight-decay groups, plan."""

from __future__ import annotations

import math

from lmplay.plan.format import StageDef
from lmplay.train.session import Session


def describe_session(session: Session, *, full: bool = False) -> str:
    s = session
    built, world = s.built, s.placement.world
    experiment = built.experiment
    params = sum(p.numel() for p in s.model.parameters())
    trainable = sum(p.numel() for p in s.model.parameters() if p.requires_grad)
    args = built.args
    precision = s.placement.precision.describe()
    lines = [
        f"exp {built.exp}: {experiment.description}",
        f"  {args.num_blocks} blocks, embed {args.embed_dim}, {args.num_heads} heads, "
        f"context {args.context_len}; {params:,} parameters ({trainable:,} trainable)",
        f"  device {s.placement.device}, {precision}"
        f"{', compiled' if s.cfg.system.compile_model else ''}"
        f"{', activation checkpointing' if s.cfg.system.activation_checkpointing else ''}; "
        f"batch {s.cfg.batch.batch_size} in mini-batches of {s.cfg.batch.mini_batch()}"
        f"{' (short samples packed)' if built.pack_len else ''}; "
        f"{s.cfg.optim.optimizer} lr {s.cfg.optim.lr:g}",
        "weight-decay groups:",
        *("  " + row for row in s.groups.describe().splitlines()),
        f"plan '{s.plan.name}': "
        + ", ".join(f"{st.name} ({stage_limits(st)})" for st in s.plan.stages),
    ]
    lines.extend(s.stop_rules.describe([stage.name for stage in s.plan.stages]))
    if s.best.set_name is not None:
        lines.append(f"best checkpoint: lowest validation loss on '{s.best.set_name}'")
    if world.distributed:
        lines.append(
            f"data parallel: {world.size} ranks ({world.parallel}); each computes every "
            f"{world.size}th mini-batch of the global batch"
        )
    if s.started_from is not None:
        initial = s.stats.meta.get("initial_model") or {}
        at = f" (trained there for {initial['step']} steps)" if initial.get("step") else ""
        lines.append(
            f"started from {s.started_from}{at}: a new run, its steps, schedule and stats "
            "count from 0"
        )
    elif s.resumed_from is not None:
        lines.append(
            f"resumed from {s.resumed_from} at step {s.runner.step}, stage "
            f"{min(s.progress.stage_index + 1, len(s.plan.stages))}/{len(s.plan.stages)}, "
            f"{s.runner.tokens:,} tokens seen"
        )
    lines.extend(f"note: {note}" for note in s.notes)
    if full:
        lines.append(f"FLOPs per token (forward+backward): {experiment.flops_per_token(args):,}")
        lines.append(str(s.model))
    return "\n".join(lines)


def stage_limits(stage: StageDef) -> str:
    """What ends a stage, for the run's description: its epochs and budgets, and its mixture."""
    limits = [] if math.isinf(stage.epochs) else [f"{stage.epochs:g} epochs"]
    limits += [f"{stage.get(k):,} {k}" for k in ("tokens", "steps") if stage.get(k) is not None]
    if stage.mix:
        total = sum(weight for _, weight in stage.mix)
        limits.append(" ".join(f"{n} {w / total:.0%}" for n, w in stage.mix))
    return ", ".join(limits)
