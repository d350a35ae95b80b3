"""RunConfig: every setting of a training run, its default, its flag and its validation.

This is the only place defaults live. The CLI builds its parser from these dataclasses (each
field's `help` metadata is its docstring), so a flag cannot drift from the value it sets.
Derived values are methods, not stored fields.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmplay.errors import UsageError

DEFAULT_OUT_DIR = "out_gpt"
OPTIMIZER_NAMES = ("adamw", "adam", "adagrad", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "linear")
AMP_DTYPES = ("auto", "bf16", "fp16")


def _flag(help_text: str, default: Any = None, **extra: Any) -> Any:
    """A dataclass field that is also a command-line flag (`--name-with-dashes`)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ModelConfig:
    exp: str = _flag(
        "architecture to train, from the experiment registry ('list' prints them)", "gpt2ish"
    )
    num_blocks: int | None = _flag("transformer blocks (default: the experiment's size)")
    embed_dim: int | None = _flag("embedding width (default: the experiment's size)")
    num_heads: int | None = _flag("attention heads (default: the experiment's size)")
    context_len: int | None = _flag("maximum tokens a sample holds (default: the experiment's)")
    dropout: float = _flag("dropout probability inside the model", 0.0)

    def size_overrides(self) -> dict[str, int | None]:
        return {
            "num_blocks": self.num_blocks,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "context_len": self.context_len,
        }


@dataclass
class DataConfig:
    training_plan: str = _flag("plan name (built-in) or path to a plan JSON file", "tiny")
    seed: int = _flag("seed for data order, initial weights and dropout", 0)
    override_plan: bool = _flag(
        "allow a different plan than the one stored in the checkpoint", False
    )
    data_workers: int | None = _flag(
        "processes that tokenize a dataset (default: the CPU cores available to this process)"
    )

    def workers(self) -> int:
        return self.data_workers or len(os.sched_getaffinity(0))


@dataclass
class BatchConfig:
    batch_size: int = _flag("samples per optimizer step (the logical batch)", 16)
    mini_batch_size: int | None = _flag(
        "samples per forward/backward; gradients accumulate to --batch-size (default: all)"
    )
    validation_batch_size: int | None = _flag(
        "samples per validation forward pass (default: --mini-batch-size)"
    )
    validation_samples: int = _flag("samples in each validation pass, per validation set", 64)
    no_packing: bool = _flag(
        "pad every sample to its own row instead of packing short samples into shared rows", False
    )

    def mini_batch(self) -> int:
        return self.mini_batch_size or self.batch_size

    def validation_batch(self) -> int:
        return self.validation_batch_size or self.mini_batch()


@dataclass
class OptimConfig:
    optimizer: str = _flag(
        f"optimizer: {', '.join(OPTIMIZER_NAMES)}", "adamw", choices=OPTIMIZER_NAMES
    )
    lr: float = _flag("peak learning rate", 1e-3)
    weight_decay: float | None = _flag("weight decay (default: 0.01 for adamw, 0 otherwise)")
    grad_clip: float = _flag("clip the global gradient norm to this (0 disables)", 1.0)
    optimizer_warmup_steps: int = _flag("optimizer steps of linear LR warmup", 20)
    optimizer_warmup_fraction: float = _flag("LR fraction the warmup starts at", 0.1)
    disable_optimizer_warmup: bool = _flag("no warmup: full LR from the first step", False)
    lr_schedule: str = _flag(
        f"LR after warmup: {', '.join(LR_SCHEDULES)}", "constant", choices=LR_SCHEDULES
    )
    min_lr: float = _flag("LR that cosine/linear decay ends at", 0.0)
    decay_steps: int | None = _flag("steps over which the LR decays (default: --max-steps)")
    ignore_optimizer: bool = _flag("load weights only; start a fresh optimizer", False)

    def weight_decay_value(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.optimizer == "adamw" else 0.0

    def warmup_steps(self) -> int:
        return 0 if self.disable_optimizer_warmup else self.optimizer_warmup_steps


@dataclass
class RunIOConfig:
    out_dir: str = _flag("folder for checkpoints and stats", DEFAULT_OUT_DIR)
    model: str | None = _flag("checkpoint to write and resume from (default: OUT_DIR/EXP.lmp)")
    initial_model: str | None = _flag(
        "checkpoint to start from when --model does not exist yet; never written"
    )
    reset_history: bool = _flag("keep the weights but restart plan progress and stats", False)
    save_interval: int = _flag("save every this many samples", 2048)
    validation_interval: int = _flag("validate every this many samples", 256)
    max_steps: int | None = _flag("stop after this many optimizer steps of the whole run")
    keep_last: int = _flag("also keep this many rolling step checkpoints (0: none)", 0)
    run_name: str | None = _flag("name of the run in stats and plots (default: the model name)")


@dataclass
class SystemConfig:
    device: str = _flag("torch device: cpu, cuda, cuda:1, mps, or auto", "auto")
    amp: bool = _flag("mixed precision: bf16 autocast (fp16 + grad scaling on old GPUs)", False)
    amp_dtype: str = _flag("autocast dtype when --amp", "auto", choices=AMP_DTYPES)
    compile_model: bool = _flag("wrap the model in torch.compile", False)
    compile_mode: str | None = _flag("torch.compile mode, e.g. reduce-overhead, max-autotune")
    describe: bool = _flag(
        "print the architecture, parameter counts and weight-decay groups, then exit", False
    )
    activation_checkpointing: bool = _flag(
        "recompute each block in backward instead of keeping its activations (less memory, "
        "about a third more compute)",
        False,
    )
    peak_tflops: float | None = _flag(
        "device peak TFLOP/s for MFU (default: a table of common GPUs; none on a CPU)"
    )
    check_grads: bool = _flag("warn about trainable parameters that get no gradient", False)
    default_freeze: bool = _flag("freeze every parameter not marked `freeze = False`", False)
    save_datasets: bool = _flag(
        "prepare every dataset of the plan into $LMP_DATASETS and exit", False
    )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    io: RunIOConfig = field(default_factory=RunIOConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = {
            "--batch-size": self.batch.batch_size,
            "--mini-batch-size": self.batch.mini_batch_size,
            "--validation-batch-size": self.batch.validation_batch_size,
            "--validation-samples": self.batch.validation_samples,
            "--save-interval": self.io.save_interval,
            "--validation-interval": self.io.validation_interval,
            "--max-steps": self.io.max_steps,
            "--num-blocks": self.model.num_blocks,
            "--embed-dim": self.model.embed_dim,
            "--num-heads": self.model.num_heads,
            "--context-len": self.model.context_len,
            "--decay-steps": self.optim.decay_steps,
            "--data-workers": self.data.data_workers,
        }
        for flag, value in positive.items():
            if value is not None and value <= 0:
                raise UsageError(f"{flag} {value} must be a positive integer")
        if self.batch.mini_batch() > self.batch.batch_size:
            raise UsageError(
                f"--mini-batch-size {self.batch.mini_batch_size} is larger than --batch-size "
                f"{self.batch.batch_size}; it must be at most the logical batch"
            )
        non_negative = {
            "--lr": self.optim.lr,
            "--weight-decay": self.optim.weight_decay,
            "--grad-clip": self.optim.grad_clip,
            "--min-lr": self.optim.min_lr,
            "--optimizer-warmup-steps": self.optim.optimizer_warmup_steps,
            "--keep-last": self.io.keep_last,
        }
        for flag, value in non_negative.items():
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise UsageError(f"{flag} {value} must be a finite number >= 0")
        peak = self.system.peak_tflops
        if peak is not None and not (peak > 0 and math.isfinite(peak)):
            raise UsageError(f"--peak-tflops {peak} must be a finite number > 0")
        if self.optim.lr == 0:
            raise UsageError("--lr 0 must be greater than 0")
        if not 0 < self.optim.optimizer_warmup_fraction <= 1:
            raise UsageError(
                f"--optimizer-warmup-fraction {self.optim.optimizer_warmup_fraction} must be in "
                "(0, 1]"
            )
        if not 0 <= self.model.dropout < 1:
            raise UsageError(f"--dropout {self.model.dropout} must be in [0, 1)")
        if (
            self.io.model is not None
            and self.io.initial_model is not None
            and Path(self.io.model).resolve() == Path(self.io.initial_model).resolve()
        ):
            raise UsageError("--initial-model must differ from --model (it is never written)")

    def model_path(self) -> Path:
        if self.io.model:
            return Path(self.io.model)
        return Path(self.io.out_dir) / f"{self.model.exp}.lmp"

    def run_name(self) -> str:
        return self.io.run_name or self.model_path().stem

    def stats_path(self) -> Path:
        return Path(self.io.out_dir) / f"{self.model_path().stem}.stats.json"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "batch": BatchConfig,
    "optim": OptimConfig,
    "io": RunIOConfig,
    "system": SystemConfig,
}
