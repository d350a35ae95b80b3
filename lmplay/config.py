"""Every setting of every command, its default and its flag: RunConfig (`lmp_trainer`) with its
validation, GenerateConfig (`lmp_generator`), EvalConfig (`lmp_eval`) and PlotConfig
(`lmp_plotstats`).

This is the only place defaults live. Each command builds its parser from these dataclasses
(`lmplay.cli.flags`; each field's `help` metadata is its docstring), so a flag cannot drift from
the value it sets. Derived values are methods, not stored fields. No torch here: lmp_plotstats
imports this module and must start without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmplay.errors import UsageError
from lmplay.run_files import CHECKPOINT_SUFFIX, RunFiles

DEFAULT_OUT_DIR = "out_gpt"
OPTIMIZER_NAMES = ("adamw", "adam", "adagrad", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "linear")
AMP_DTYPES = ("auto", "bf16", "fp16")
MAX_LR = 10.0  # far above any useful rate; larger values only overflow the weights
MAX_SEED = 2**63 - 1  # torch's generators take a signed 64-bit seed
PARALLELISMS = ("ddp", "fsdp")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # --log-to; each is the extra of its package
# What a resume compares and --allow-changed may accept: flags (without `--`) and the data files.
RESUME_SETTINGS = ("seed", "dropout", "batch-size", "no-packing", "data")


def _flag(help_text: str, default: Any = None, **extra: Any) -> Any:
    """A dataclass field that is also a command-line flag (`--name-with-dashes`)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ModelConfig:
    exp: str = _flag(
        "architecture to train: a registered name ('list' prints them) or hf:PATH, a local "
        "transformers causal LM folder",
        "gpt2ish",
    )
    num_blocks: int | None = _flag("transformer blocks (default: the experiment's size)")
    embed_dim: int | None = _flag("embedding width (default: the experiment's size)")
    num_heads: int | None = _flag("attention heads (default: the experiment's size)")
    context_len: int | None = _flag("maximum tokens a sample holds (default: the experiment's)")
    dropout: float | None = _flag(
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
    training_plan: str = _flag("plan name (built-in) or path to a plan JSON file", "tiny")
    seed: int = _flag("seed for data order, initial weights and dropout", 0)
    override_plan: bool = _flag(
        "allow a different plan than the one stored in the checkpoint", False
    )
    allow_changed: str | None = _flag(
        "on resume, accept these settings differing from the checkpoint's, comma-separated: "
        "seed, dropout, batch-size, no-packing, data (the datasets' file contents)"
    )
    data_workers: int | None = _flag(
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
    ignore_optimizer: bool = _flag(
        "load weights only; start a fresh optimizer, its LR warmed up again from this step", False
    )
    initial_model_optimizer: bool = _flag(
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
    out_dir: str | None = _flag(
        f"folder for the checkpoint and its stats (default: {DEFAULT_OUT_DIR}/PLAN, PLAN being "
        "--training-plan's name or file stem, so runs of different plans never collide); with "
        "--model, the run's files lie beside the model instead"
    )
    model: str | None = _flag(
        "checkpoint to write and resume from, NAME.lmp; its stats, lock and other checkpoints are "
        "named after it, beside it (default: OUT_DIR/EXP.lmp)"
    )
    initial_model: str | None = _flag(
        "checkpoint or transformers folder to start a new run from when --model does not exist "
        "yet (steps, schedule and stats start at 0); never written"
    )
    reset_history: bool = _flag("keep the weights but restart plan progress and stats", False)
    save_interval: int = _flag("save every this many samples", 2048)
    validation_interval: int = _flag("validate every this many samples", 256)
    max_steps: int | None = _flag("stop after this many optimizer steps of the whole run")
    keep_last: int = _flag("also keep this many rolling step checkpoints (0: none)", 0)
    run_name: str | None = _flag("name of the run in stats and plots (default: the model name)")
    log_to: str | None = _flag(
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

    stop_at_loss: float | None = _flag(
        "end a stage when the running mean of its last --stop-loss-window train losses is <= this"
    )
    stop_loss_window: int = _flag("optimizer steps in the running mean of --stop-at-loss", 20)
    min_steps: int | None = _flag(
        "no --stop-at-loss or early stop before this many optimizer steps of the stage"
    )
    min_epochs: float | None = _flag(
        "no --stop-at-loss or early stop before this many epochs of the stage"
    )
    max_epochs: float | None = _flag("end every stage after at most this many of its epochs")
    early_stop_set: str | None = _flag(
        "end a stage when this validation set has not improved for --patience validations"
    )
    patience: int | None = _flag(
        "validations without improvement before --early-stop-set ends a stage (default 3)"
    )
    keep_best: bool = _flag("keep <model>.best.lmp: the weights of the best validation loss", False)
    best_set: str | None = _flag(
        "validation set that --keep-best ranks by (default: the plan's first); implies --keep-best"
    )


DEFAULT_PROMPTS = ("The", "Once upon a time")


@dataclass
class SamplesConfig:
    """Samples during training: fixed prompts continued on an interval, printed and recorded."""

    generate_every: int | None = _flag(
        "continue the sample prompts every this many samples, print and record them"
    )
    generate_prompts: str | None = _flag(
        "prompts for --generate-every, separated by '|' (default: the plan's generate_prompts, "
        f"else {'|'.join(DEFAULT_PROMPTS)!r})"
    )
    generate_tokens: int = _flag("tokens each --generate-every sample adds to its prompt", 40)
    temperature: float = _flag("sampling temperature of --generate-every (0: greedy)", 0.8)
    top_k: int = _flag("sample --generate-every tokens from the k likeliest (0: all)", 50)

    def prompts(self, plan_prompts: tuple[str, ...] = ()) -> tuple[str, ...]:
        if self.generate_prompts is not None:
            return tuple(p for p in self.generate_prompts.split("|") if p.strip())
        return plan_prompts or DEFAULT_PROMPTS


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
    parallel: str = _flag(
        "under torchrun with several processes: ddp replicates the model on every rank, "
        "fsdp shards it (FSDP2, one unit per block)",
        "ddp",
        choices=PARALLELISMS,
    )


@dataclass
class AdapterConfig:
    lora_rank: int = _flag("rank of LoRA adapters (peft) on --lora-targets; 0: no adapters", 0)
    lora_alpha: float | None = _flag("LoRA scale numerator: adapters add alpha/rank * B @ A")
    lora_targets: str | None = _flag(
        "comma-separated names of the Linear layers that get adapters, e.g. qkv,proj "
        "(lmplay's models) or q_proj,v_proj (Llama)"
    )
    lora_dropout: float = _flag("dropout on the input of the LoRA adapters", 0.0)

    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in (self.lora_targets or "").split(",") if t.strip())

    def alpha(self) -> float:
        return float(self.lora_rank) if self.lora_alpha is None else self.lora_alpha


def exp_file_stem(exp: str) -> str:
    """The experiment's name as a file name: `hf:/models/tiny-llama` -> `hf_tiny-llama`."""
    return "hf_" + Path(exp[len("hf:") :]).name if exp.startswith("hf:") else exp


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    io: RunIOConfig = field(default_factory=RunIOConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

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
            "--stop-loss-window": self.stop.stop_loss_window,
            "--patience": self.stop.patience,
            "--max-epochs": self.stop.max_epochs,
            "--generate-every": self.samples.generate_every,
            "--generate-tokens": self.samples.generate_tokens,
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
            "--stop-at-loss": self.stop.stop_at_loss,
            "--min-steps": self.stop.min_steps,
            "--min-epochs": self.stop.min_epochs,
            "--temperature": self.samples.temperature,
            "--top-k": self.samples.top_k,
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
        if self.samples.generate_prompts is not None and not self.samples.prompts():
            raise UsageError(
                f"--generate-prompts {self.samples.generate_prompts!r} holds no prompt; give "
                "texts separated by '|', e.g. 'The king|Once upon a time'"
            )
        unknown = [name for name in self.io.trackers() if name not in TRACKERS]
        if unknown or (self.io.log_to is not None and not self.io.trackers()):
            raise UsageError(
                f"--log-to {self.io.log_to!r}: {', '.join(unknown) or 'no tracker named'}; "
                f"choose from {', '.join(TRACKERS)} (comma-separated)"
            )
        unknown = sorted(self.data.allowed_changes() - set(RESUME_SETTINGS))
        if unknown:
            raise UsageError(
                f"--allow-changed {', '.join(unknown)}: not a setting a resume compares; choose "
                f"from {', '.join(RESUME_SETTINGS)}"
            )
        if self.system.parallel not in PARALLELISMS:
            raise UsageError(
                f"--parallel {self.system.parallel}: choose one of {', '.join(PARALLELISMS)}"
            )
        if self.model.dropout is not None and not 0 <= self.model.dropout < 1:
            raise UsageError(f"--dropout {self.model.dropout} must be in [0, 1)")
        self._validate_lora()
        if (
            self.io.model is not None
            and self.io.initial_model is not None
            and Path(self.io.model).resolve() == Path(self.io.initial_model).resolve()
        ):
            raise UsageError("--initial-model must differ from --model (it is never written)")
        _check_ranges(self)
        _check_combinations(self)
        self.run_files()  # a --model name that cannot name a run's files

    def out_dir(self) -> Path:
        if self.io.out_dir is not None:
            return Path(self.io.out_dir)
        return Path(DEFAULT_OUT_DIR) / plan_label(self.data.training_plan)

    def _validate_lora(self) -> None:
        lora = self.lora
        if lora.lora_rank < 0:
            raise UsageError(f"--lora-rank {lora.lora_rank} must be >= 0 (0: no adapters)")
        if lora.lora_rank and not lora.targets():
            raise UsageError(
                f"--lora-rank {lora.lora_rank} needs --lora-targets (Linear layer names, e.g. "
                "qkv,proj for lmplay's models or q_proj,v_proj for Llama)"
            )
        if not lora.lora_rank and (lora.lora_targets or lora.lora_alpha is not None):
            raise UsageError("--lora-targets and --lora-alpha need --lora-rank R (R > 0)")
        if lora.lora_alpha is not None and not (
            lora.lora_alpha > 0 and math.isfinite(lora.lora_alpha)
        ):
            raise UsageError(f"--lora-alpha {lora.lora_alpha} must be a finite number > 0")
        if not 0 <= lora.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {lora.lora_dropout} must be in [0, 1)")

    def run_files(self) -> RunFiles:
        """Every file the run writes, named from its checkpoint (`--model`, else
        `OUT_DIR/EXP.lmp`); UsageError for a checkpoint name that cannot name a run."""
        if self.io.model:
            return RunFiles.for_checkpoint(self.io.model, "--model")
        default = self.out_dir() / f"{exp_file_stem(self.model.exp)}{CHECKPOINT_SUFFIX}"
        return RunFiles.for_checkpoint(default, "--exp")

    def model_path(self) -> Path:
        return self.run_files().checkpoint

    def run_name(self) -> str:
        return self.io.run_name or self.model_path().stem

    def stats_path(self) -> Path:
        """Beside the checkpoint, whatever --out-dir says: the stats belong to the run."""
        return self.run_files().stats

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_label(training_plan: str) -> str:
    """The folder name of a plan's runs: a built-in plan's name, or a plan file's stem.

    `tiny` -> `tiny`, `plans/wiki.json` -> `wiki` (the file mirrors the built-in plan, so both
    spellings of one plan share a folder).
    """
    path = Path(training_plan)
    if path.suffix == ".json" or len(path.parts) > 1:
        return path.stem
    return training_plan


def _check_ranges(cfg: RunConfig) -> None:
    """Values that parse but cannot work: overflowing rates, seeds torch rejects, empty names."""
    if cfg.optim.lr > MAX_LR:
        raise UsageError(f"--lr {cfg.optim.lr} is too large; use a rate in (0, {MAX_LR:g}]")
    if not 0 <= cfg.data.seed <= MAX_SEED:
        raise UsageError(f"--seed {cfg.data.seed} must be an integer in [0, 2**63 - 1]")
    names = {
        "--out-dir": cfg.io.out_dir,
        "--model": cfg.io.model,
        "--initial-model": cfg.io.initial_model,
        "--run-name": cfg.io.run_name,
        "--training-plan": cfg.data.training_plan,
    }
    for flag, value in names.items():
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty; give a name or leave the flag out")
    if cfg.optim.optimizer == "adamw" and cfg.optim.lr * cfg.optim.weight_decay_value() >= 1:
        raise UsageError(
            f"--lr {cfg.optim.lr} x --weight-decay {cfg.optim.weight_decay_value()} is at least "
            "1: each adamw step would zero or flip every weight; lower one of them"
        )


def _check_combinations(cfg: RunConfig) -> None:
    """Flags that contradict each other, or that the rest of the command line makes no-ops."""
    optim, system = cfg.optim, cfg.system
    if optim.lr_schedule == "constant":
        if optim.decay_steps is not None or optim.min_lr != 0:
            flag = "--decay-steps" if optim.decay_steps is not None else "--min-lr"
            raise UsageError(f"{flag} applies to --lr-schedule cosine or linear, not constant")
    elif optim.min_lr > optim.lr:
        raise UsageError(
            f"--min-lr {optim.min_lr} exceeds --lr {optim.lr}; the decay must end at or below "
            "the peak"
        )
    if optim.lr_schedule != "constant" and optim.decay_steps is None and cfg.io.max_steps is None:
        raise UsageError(f"--lr-schedule {optim.lr_schedule} needs --decay-steps or --max-steps")
    if optim.initial_model_optimizer and cfg.io.initial_model is None:
        raise UsageError("--initial-model-optimizer needs --initial-model")
    if optim.initial_model_optimizer and optim.ignore_optimizer:
        raise UsageError("--initial-model-optimizer and --ignore-optimizer contradict each other")
    if system.amp_dtype != "auto" and not system.amp:
        raise UsageError(f"--amp-dtype {system.amp_dtype} needs --amp")
    if system.compile_mode is not None and not system.compile_model:
        raise UsageError(f"--compile-mode {system.compile_mode} needs --compile-model")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "batch": BatchConfig,
    "optim": OptimConfig,
    "io": RunIOConfig,
    "system": SystemConfig,
    "lora": AdapterConfig,
    "stop": StopConfig,
    "samples": SamplesConfig,
}


@dataclass
class GenerateConfig:
    """`lmp_generator` flags (the prompt is its positional argument)."""

    model: str | None = _flag("checkpoint file written by training (required)")
    max_new_tokens: int = _flag("tokens to generate at most", 100)
    temperature: float = _flag("sampling temperature; 0 picks the likeliest token", 0.8)
    top_k: int = _flag("sample among the k likeliest tokens; 0 disables top-k filtering", 50)
    top_p: float = _flag(
        "nucleus sampling: smallest set of tokens with this mass; 1 disables", 0.95
    )
    seed: int | None = _flag("make sampling reproducible")
    device: str = _flag("torch device: cpu, cuda, cuda:1, mps, ...", "cpu")


@dataclass
class EvalConfig:
    """`lmp_eval` flags (the checkpoint or transformers folder is its positional argument)."""

    texts: str | None = _flag(
        'score the texts of this file: a .jsonl file holds one {"text": ...} per line, any '
        "other file is one text",
        metavar="FILE",
    )
    training_plan: str | None = _flag(
        "score the validation sets of this plan (built-in name or plan file), as lmp_trainer "
        "validates",
        metavar="PLAN",
    )
    set: str | None = _flag("only this validation set of --training-plan", metavar="NAME")
    validation_samples: int | None = _flag(
        "samples scored per set, as lmp_trainer's --validation-samples (default: 64 for a plan, "
        "every sample of --texts)",
        metavar="N",
    )
    validation_batch_size: int = _flag(
        "samples per forward pass (a run validates with its --validation-batch-size, else "
        "--mini-batch-size, else --batch-size)",
        16,
        metavar="N",
    )
    json: str | None = _flag(
        'also write the figures to FILE as {SET: {"loss": ..., "perplexity": ..., "tokens": ...}}',
        metavar="FILE",
    )
    device: str = _flag("torch device: cpu, cuda, cuda:1, mps, ...", "cpu")
    data_workers: int | None = _flag("processes that tokenize a plan's datasets (default: 1)")


EVAL_SECTIONS: dict[str, type] = {"eval": EvalConfig}


PLOT_OUT_TYPES = ("png", "svg", "pdf")
PLOT_BANDS = ("std", "minmax")  # how a seed group's spread is drawn around its mean
# A validation record is already a mean over many samples, and there are few of them: a trailing
# average would lag the curve and misstate the last value, so validation is drawn as measured.
PLOT_AVERAGE_WINDOW = {"train": 20, "validation": 1}


@dataclass
class PlotConfig:
    """`lmp_plotstats` flags (the stats files or folders are its positional arguments)."""

    out_dir: str | None = _flag(
        "where plots go (default: the first location that is a folder, else the folder of the "
        "first file)"
    )
    out_type: str = _flag("image format of the plots", "png", choices=PLOT_OUT_TYPES)
    plot_train: bool = _flag(
        "also plot train series (train_<metric>.*); they are plotted anyway when no run has "
        "validation records",
        False,
    )
    plot_raw: bool = _flag("draw raw values faintly under smoothed lines", False)
    average_count: int | None = _flag(
        f"moving-average window in records (default: {PLOT_AVERAGE_WINDOW['train']} for train, "
        f"{PLOT_AVERAGE_WINDOW['validation']} for validation; 1 for no smoothing)",
        metavar="N",
    )
    target: str | None = _flag(
        "run that diff plots subtract (default: the run with the most tokens)", metavar="NAME"
    )
    max_files: int | None = _flag(
        "plot at most N runs: those with the most tokens (the target is always kept)",
        metavar="N",
    )
    min_tokens: int = _flag("leave out runs that have seen fewer than N tokens", 0, metavar="N")
    # Seed groups: runs equal in exp and meta except their seed.
    group_seeds: bool = _flag(
        "also draw groups_<metric>.* (mean over seeds with a band) and write the final "
        "validation loss per group to summary.csv and summary.json; implied by --band and "
        "--compare",
        False,
    )
    band: str | None = _flag(
        "band around each seed group's mean: std (±1 sample standard deviation, the default) "
        "or minmax",
        choices=PLOT_BANDS,
    )
    compare: str | None = _flag(
        "Welch's t-test of the final validation losses of seed groups A and B (a group label, "
        "or a part of one that matches only it)",
        nargs=2,
        metavar=("A", "B"),
    )
    csv: bool = _flag(
        "also write records.csv: every record of every run, one row per record", False
    )
    to_tensorboard: str | None = _flag(
        "instead of plotting, write each run as TensorBoard event files in a folder of DIR "
        "named after the run (pip install 'lmplay[tensorboard]'); then: tensorboard --logdir DIR",
        metavar="DIR",
    )
    plot: str | None = _flag(
        "also draw against tokens, comma-separated: lr (the learning rate of every step), mix "
        "(each dataset's share of the target tokens trained, from source_tokens)",
        metavar="lr,mix",
    )


GENERATE_SECTIONS: dict[str, type] = {"generate": GenerateConfig}
PLOT_SECTIONS: dict[str, type] = {"plot": PlotConfig}
