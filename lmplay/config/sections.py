"""The sections of `lmp_trainer`'s configuration: one dataclass per concern, one field per flag.

Each field's `help` is its flag's help text; its default is the flag's default (this is the only
place defaults live). Derived values are methods, not stored fields. `RunConfig` (run.py) holds
one of each section and checks them together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_OUT_DIR = "out_gpt"
OPTIMIZER_NAMES = ("adamw", "adam", "adagrad", "sgd", "rmsprop")


LR_SCHEDULES = ("constant", "cosine", "linear")


AMP_DTYPES = ("auto", "bf16", "fp16")


PARALLELISMS = ("ddp", "fsdp")


TRACKERS = ("tensorboard", "wandb", "mlflow")  # --log-to; each is the extra of its package


# What a resume compares and --allow-changed may accept: flags (without `--`) and the data files.
RESUME_SETTINGS = ("seed", "dropout", "batch-size", "no-packing", "data")


def flag(help_text: str, default: Any = None, **extra: Any) -> Any:
    """A dataclass field that is also a command-line flag (`--name-with-dashes`). `extra` goes
    to the parser: `choices`, `metavar`, `nargs`, `action="append"` (a repeatable flag: a
    `tuple[str, ...]` field), `group` (the `--help` section it is listed in)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ModelConfig:
    exp: str = flag(
        "architecture to train: a registered name ('list' prints them) or hf:PATH, a local "
        "transformers causal LM folder",
        "gpt2ish",
    )
    num_blocks: int | None = flag("transformer blocks (default: the experiment's size)")
    embed_dim: int | None = flag("embedding width (default: the experiment's size)")
    num_heads: int | None = flag("attention heads (default: the experiment's size)")
    context_len: int | None = flag("maximum tokens a sample holds (default: the experiment's)")
    dropout: float | None = flag(
        "dropout probability inside the model (default: the checkpoint's or transformers "
        "folder's, else 0)"
    )

    def size_overrides(self) -> dict[str, int | None]:
        return {
            "num_blocks": self.num_blocks,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "context_len": self.context_len,
        }


@dataclass
class DataConfig:
    training_plan: str = flag("plan name (built-in) or path to a plan JSON file", "tiny")
    seed: int = flag("seed for data order, initial weights and dropout", 0)
    override_plan: bool = flag(
        "allow a different plan than the one stored in the checkpoint", False
    )
    allow_changed: str | None = flag(
        "on resume, accept these settings differing from the checkpoint's, comma-separated: "
        "seed, dropout, batch-size, no-packing, data (the datasets' file contents)"
    )
    data_workers: int | None = flag(
        "processes that tokenize a dataset (default: the CPU cores available to this process)"
    )

    def workers(self) -> int:
        return self.data_workers or len(os.sched_getaffinity(0))

    def allowed_changes(self) -> set[str]:
        """The names of --allow-changed (each one of RESUME_SETTINGS, checked by validate)."""
        text = self.allow_changed or ""
        return {name.strip().removeprefix("--") for name in text.split(",") if name.strip()}


@dataclass
class BatchConfig:
    batch_size: int = flag("samples per optimizer step (the logical batch)", 16)
    mini_batch_size: int | None = flag(
        "samples per forward/backward; gradients accumulate to --batch-size (default: all)"
    )
    validation_batch_size: int | None = flag(
        "samples per validation forward pass (default: --mini-batch-size)"
    )
    validation_samples: int = flag("samples in each validation pass, per validation set", 64)
    no_packing: bool = flag(
        "pad every sample to its own row instead of packing short samples into shared rows", False
    )

    def mini_batch(self) -> int:
        return self.mini_batch_size or self.batch_size

    def validation_batch(self) -> int:
        return self.validation_batch_size or self.mini_batch()


@dataclass
class OptimConfig:
    optimizer: str = flag(
        f"optimizer: {', '.join(OPTIMIZER_NAMES)}", "adamw", choices=OPTIMIZER_NAMES
    )
    lr: float = flag("peak learning rate", 1e-3)
    weight_decay: float | None = flag("weight decay (default: 0.01 for adamw, 0 otherwise)")
    grad_clip: float = flag("clip the global gradient norm to this (0 disables)", 1.0)
    optimizer_warmup_steps: int = flag("optimizer steps of linear LR warmup", 20)
    optimizer_warmup_fraction: float = flag("LR fraction the warmup starts at", 0.1)
    disable_optimizer_warmup: bool = flag("no warmup: full LR from the first step", False)
    lr_schedule: str = flag(
        f"LR after warmup: {', '.join(LR_SCHEDULES)}", "constant", choices=LR_SCHEDULES
    )
    min_lr: float = flag("LR that cosine/linear decay ends at", 0.0)
    decay_steps: int | None = flag("steps over which the LR decays (default: --max-steps)")
    ignore_optimizer: bool = flag(
        "load weights only; start a fresh optimizer, its LR warmed up again from this step", False
    )
    initial_model_optimizer: bool = flag(
        "with --initial-model: also take its optimizer state, if its parameters are exactly "
        "this run's (default: a fresh optimizer)",
        False,
    )

    def weight_decay_value(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.optimizer == "adamw" else 0.0

    def warmup_steps(self) -> int:
        return 0 if self.disable_optimizer_warmup else self.optimizer_warmup_steps


@dataclass
class RunIOConfig:
    out_dir: str | None = flag(
        f"folder for the checkpoint and its stats (default: {DEFAULT_OUT_DIR}/PLAN, PLAN being "
        "--training-plan's name or file stem, so runs of different plans never collide); with "
        "--model, the run's files lie beside the model instead"
    )
    model: str | None = flag(
        "checkpoint to write and resume from, NAME.lmp; its stats, lock and other checkpoints are "
        "named after it, beside it (default: OUT_DIR/EXP.lmp)"
    )
    initial_model: str | None = flag(
        "checkpoint or transformers folder to start a new run from when --model does not exist "
        "yet (steps, schedule and stats start at 0); never written"
    )
    reset_history: bool = flag("keep the weights but restart plan progress and stats", False)
    save_interval: int = flag("save every this many samples", 2048)
    validation_interval: int = flag("validate every this many samples", 256)
    max_steps: int | None = flag("stop after this many optimizer steps of the whole run")
    keep_last: int = flag("also keep this many rolling step checkpoints (0: none)", 0)
    run_name: str | None = flag("name of the run in stats and plots (default: the model name)")
    log_to: str | None = flag(
        f"also log every record to these trackers, comma-separated: {', '.join(TRACKERS)} "
        "(each needs its extra: pip install 'lmplay[NAME]'; the stats file is still written)",
        metavar="NAMES",
    )

    def trackers(self) -> tuple[str, ...]:
        """The names of --log-to, in the order given, each once."""
        names = [name.strip() for name in (self.log_to or "").split(",") if name.strip()]
        return tuple(dict.fromkeys(names))


@dataclass
class StopConfig:
    """Stop rules for every stage (a stage's own keys override them) and the best checkpoint.

    Counts are per stage: steps and epochs of the stage being trained. `--max-steps` (a pause of
    the whole run) is in `RunIOConfig`.
    """

    stop_at_loss: float | None = flag(
        "end a stage when the running mean of its last --stop-loss-window train losses is <= this"
    )
    stop_loss_window: int = flag("optimizer steps in the running mean of --stop-at-loss", 20)
    min_steps: int | None = flag(
        "no --stop-at-loss or early stop before this many optimizer steps of the stage"
    )
    min_epochs: float | None = flag(
        "no --stop-at-loss or early stop before this many epochs of the stage"
    )
    max_epochs: float | None = flag("end every stage after at most this many of its epochs")
    early_stop_set: str | None = flag(
        "end a stage when this validation set has not improved for --patience validations"
    )
    patience: int | None = flag(
        "validations without improvement before --early-stop-set ends a stage (default 3)"
    )
    keep_best: bool = flag("keep <model>.best.lmp: the weights of the best validation loss", False)
    best_set: str | None = flag(
        "validation set that --keep-best ranks by (default: the plan's first); implies --keep-best"
    )


DEFAULT_PROMPTS = ("The", "Once upon a time")


@dataclass
class SamplesConfig:
    """Samples during training: fixed prompts continued on an interval, printed and recorded."""

    generate_every: int | None = flag(
        "continue the sample prompts every this many samples, print and record them"
    )
    generate_prompts: str | None = flag(
        "prompts for --generate-every, separated by '|' (default: the plan's generate_prompts, "
        f"else {'|'.join(DEFAULT_PROMPTS)!r})"
    )
    generate_tokens: int = flag("tokens each --generate-every sample adds to its prompt", 40)
    temperature: float = flag("sampling temperature of --generate-every (0: greedy)", 0.8)
    top_k: int = flag("sample --generate-every tokens from the k likeliest (0: all)", 50)

    def prompts(self, plan_prompts: tuple[str, ...] = ()) -> tuple[str, ...]:
        if self.generate_prompts is not None:
            return tuple(p for p in self.generate_prompts.split("|") if p.strip())
        return plan_prompts or DEFAULT_PROMPTS


@dataclass
class SystemConfig:
    device: str = flag("torch device: cpu, cuda, cuda:1, mps, or auto", "auto")
    amp: bool = flag("mixed precision: bf16 autocast (fp16 + grad scaling on old GPUs)", False)
    amp_dtype: str = flag("autocast dtype when --amp", "auto", choices=AMP_DTYPES)
    compile_model: bool = flag("wrap the model in torch.compile", False)
    compile_mode: str | None = flag("torch.compile mode, e.g. reduce-overhead, max-autotune")
    describe: bool = flag(
        "print the architecture, parameter counts and weight-decay groups, then exit", False
    )
    activation_checkpointing: bool = flag(
        "recompute each block in backward instead of keeping its activations (less memory, "
        "about a third more compute)",
        False,
    )
    peak_tflops: float | None = flag(
        "device peak TFLOP/s for MFU (default: a table of common GPUs; none on a CPU)"
    )
    check_grads: bool = flag("warn about trainable parameters that get no gradient", False)
    default_freeze: bool = flag("freeze every parameter not marked `freeze = False`", False)
    save_datasets: bool = flag(
        "prepare every dataset of the plan into $LMP_DATASETS and exit", False
    )
    parallel: str = flag(
        "under torchrun with several processes: ddp replicates the model on every rank, "
        "fsdp shards it (FSDP2, one unit per block)",
        "ddp",
        choices=PARALLELISMS,
    )


@dataclass
class AdapterConfig:
    lora_rank: int = flag("rank of LoRA adapters (peft) on --lora-targets; 0: no adapters", 0)
    lora_alpha: float | None = flag("LoRA scale numerator: adapters add alpha/rank * B @ A")
    lora_targets: str | None = flag(
        "comma-separated names of the Linear layers that get adapters, e.g. qkv,proj "
        "(lmplay's models) or q_proj,v_proj (Llama)"
    )
    lora_dropout: float = flag("dropout on the input of the LoRA adapters", 0.0)

    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in (self.lora_targets or "").split(",") if t.strip())

    def alpha(self) -> float:
        return float(self.lora_rank) if self.lora_alpha is None else self.lora_alpha
