"""`RunConfig`: every section of `lmp_trainer`'s configuration, checked together once.

`RunConfig.validate` (run on construction) refuses, with one line naming the flag and what is
allowed, every value that parses but cannot work and every contradictory combination, before
anything is read or built. The files a run writes are named here too (`run_files`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmplay.config.sections import (
    DEFAULT_OUT_DIR,
    PARALLELISMS,
    RESUME_SETTINGS,
    TRACKERS,
    AdapterConfig,
    BatchConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunIOConfig,
    SamplesConfig,
    StopConfig,
    SystemConfig,
)
from lmplay.errors import UsageError
from lmplay.run_files import CHECKPOINT_SUFFIX, RunFiles

MAX_LR = 10.0  # far above any useful rate; larger values only overflow the weights


MAX_SEED = 2**63 - 1  # torch's generators take a signed 64-bit seed


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
