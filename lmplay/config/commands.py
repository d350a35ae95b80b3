"""The configurations of the other commands: `lmp_generator` (GenerateConfig), `lmp_eval`
(EvalConfig), `lmp_plotstats` (PlotConfig) and `lmp_grid` (GridConfig), each checked on
construction.

No torch here: lmp_plotstats and lmp_grid must start without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmplay.config.run import MAX_SEED
from lmplay.config.sections import flag
from lmplay.errors import UsageError

MAX_NEW_TOKENS = 1_000_000


@dataclass
class GenerateConfig:
    """`lmp_generator` flags (the prompt is its positional argument)."""

    model: str | None = flag("checkpoint file written by training (required)")
    max_new_tokens: int = flag("tokens to generate at most", 100)
    temperature: float = flag("sampling temperature; 0 picks the likeliest token", 0.8)
    top_k: int = flag("sample among the k likeliest tokens; 0 disables top-k filtering", 50)
    top_p: float = flag("nucleus sampling: smallest set of tokens with this mass; 1 disables", 0.95)
    seed: int | None = flag("make sampling reproducible")
    device: str = flag("torch device: cpu, cuda, cuda:1, mps, ...", "cpu")

    def __post_init__(self) -> None:
        if self.model is None:
            raise UsageError("--model is required: the checkpoint file written by training")
        if Path(self.model).is_dir():
            raise UsageError(f"--model {self.model}: is a folder; name a checkpoint file")
        if self.max_new_tokens < 0:
            raise UsageError(f"--max-new-tokens must be >= 0, got {self.max_new_tokens}")
        if self.max_new_tokens > MAX_NEW_TOKENS:
            raise UsageError(
                f"--max-new-tokens must be at most {MAX_NEW_TOKENS:,}, got {self.max_new_tokens}"
            )
        if not math.isfinite(self.temperature):
            raise UsageError(f"--temperature must be a finite number, got {self.temperature}")
        if self.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be >= 0 (0 disables top-k filtering), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be an integer in [0, 2**63 - 1], got {self.seed}")


@dataclass
class EvalConfig:
    """`lmp_eval` flags (the checkpoint or transformers folder is its positional argument)."""

    texts: str | None = flag(
        'score the texts of this file: a .jsonl file holds one {"text": ...} per line, any '
        "other file is one text",
        metavar="FILE",
    )
    training_plan: str | None = flag(
        "score the validation sets of this plan (built-in name or plan file), as lmp_trainer "
        "validates",
        metavar="PLAN",
    )
    set: str | None = flag("only this validation set of --training-plan", metavar="NAME")
    validation_samples: int | None = flag(
        "samples scored per set, as lmp_trainer's --validation-samples (default: 64 for a plan, "
        "every sample of --texts)",
        metavar="N",
    )
    validation_batch_size: int = flag(
        "samples per forward pass (a run validates with its --validation-batch-size, else "
        "--mini-batch-size, else --batch-size)",
        16,
        metavar="N",
    )
    json: str | None = flag(
        'also write the figures to FILE as {SET: {"loss": ..., "perplexity": ..., "tokens": ...}}',
        metavar="FILE",
    )
    device: str = flag("torch device: cpu, cuda, cuda:1, mps, ...", "cpu")
    data_workers: int | None = flag("processes that tokenize a plan's datasets (default: 1)")

    def __post_init__(self) -> None:
        if (self.texts is None) == (self.training_plan is None):
            raise UsageError("give --texts FILE or --training-plan PLAN (one of them)")
        if self.set is not None and self.training_plan is None:
            raise UsageError("--set NAME names a validation set of --training-plan")
        for name in ("validation_samples", "validation_batch_size", "data_workers"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} {value} must be a positive integer")


EVAL_SECTIONS: dict[str, type] = {"eval": EvalConfig}


PLOT_OUT_TYPES = ("png", "svg", "pdf")


PLOT_BANDS = ("std", "minmax")  # how a seed group's spread is drawn around its mean


# A validation record is already a mean over many samples, and there are few of them: a trailing
# average would lag the curve and misstate the last value, so validation is drawn as measured.
PLOT_AVERAGE_WINDOW = {"train": 20, "validation": 1}


@dataclass
class PlotConfig:
    """`lmp_plotstats` flags (the stats files or folders are its positional arguments)."""

    out_dir: str | None = flag(
        "where plots go (default: the first location that is a folder, else the folder of the "
        "first file)"
    )
    out_type: str = flag("image format of the plots", "png", choices=PLOT_OUT_TYPES)
    plot_train: bool = flag(
        "also plot train series (train_<metric>.*); they are plotted anyway when no run has "
        "validation records",
        False,
    )
    plot_raw: bool = flag("draw raw values faintly under smoothed lines", False)
    average_count: int | None = flag(
        f"moving-average window in records (default: {PLOT_AVERAGE_WINDOW['train']} for train, "
        f"{PLOT_AVERAGE_WINDOW['validation']} for validation; 1 for no smoothing)",
        metavar="N",
    )
    target: str | None = flag(
        "run that diff plots subtract (default: the run with the most tokens)", metavar="NAME"
    )
    max_files: int | None = flag(
        "plot at most N runs: those with the most tokens (the target is always kept)",
        metavar="N",
    )
    min_tokens: int = flag("leave out runs that have seen fewer than N tokens", 0, metavar="N")
    # Seed groups: runs equal in exp and meta except their seed.
    group_seeds: bool = flag(
        "also draw groups_<metric>.* (mean over seeds with a band) and write the final "
        "validation loss per group to summary.csv and summary.json; implied by --band and "
        "--compare",
        False,
    )
    band: str | None = flag(
        "band around each seed group's mean: std (±1 sample standard deviation, the default) "
        "or minmax",
        choices=PLOT_BANDS,
    )
    compare: str | None = flag(
        "Welch's t-test of the final validation losses of seed groups A and B (a group label, "
        "or a part of one that matches only it)",
        nargs=2,
        metavar=("A", "B"),
    )
    csv: bool = flag("also write records.csv: every record of every run, one row per record", False)
    to_tensorboard: str | None = flag(
        "instead of plotting, write each run as TensorBoard event files in a folder of DIR "
        "named after the run (pip install 'lmplay[tensorboard]'); then: tensorboard --logdir DIR",
        metavar="DIR",
    )
    plot: str | None = flag(
        "also draw against tokens, comma-separated: lr (the learning rate of every step), mix "
        "(each dataset's share of the target tokens trained, from source_tokens)",
        metavar="lr,mix",
    )

    def __post_init__(self) -> None:
        check_plot_values(self.out_type, self.average_count, self.max_files, self.min_tokens)


def check_plot_values(
    out_type: str, average_count: int | None, max_files: int | None, min_tokens: int
) -> None:
    """The values `lmp_plotstats` and the plotting API (`PlotOptions`) both take."""
    if out_type not in PLOT_OUT_TYPES:
        raise UsageError(f"unknown output type {out_type!r}; choose one of {PLOT_OUT_TYPES}")
    if average_count is not None and average_count < 1:
        raise UsageError(f"--average-count must be at least 1, got {average_count}")
    if max_files is not None and max_files < 1:
        raise UsageError(f"--max-files must be at least 1, got {max_files}")
    if min_tokens < 0:
        raise UsageError(f"--min-tokens must not be negative, got {min_tokens}")


GENERATE_SECTIONS: dict[str, type] = {"generate": GenerateConfig}


PLOT_SECTIONS: dict[str, type] = {"plot": PlotConfig}


EXECUTORS = ("local", "submitit-local", "slurm")
DEFAULT_SLURM_TIME_MIN = 24 * 60
EXECUTOR_GROUP = "executors (submitit-local and slurm: pip install 'lmplay[slurm]')"


def _executor_flag(help_text: str, default: Any = None, **extra: Any) -> Any:
    return flag(help_text, default, group=EXECUTOR_GROUP, **extra)


@dataclass
class GridConfig:
    """`lmp_grid` flags (the grid file is its positional argument)."""

    devices: str = flag(
        "comma-separated torch devices cells run on, e.g. cuda:0,cuda:1 (default: cpu)", "cpu"
    )
    jobs: int = flag("cells run at once on each device (default: 1)", 1, metavar="N")
    out_root: str | None = flag(
        "folder holding one folder per cell (default: the grid's out_root, else "
        "out_grid/<grid name>)"
    )
    status: bool = flag("print the table of cells and exit (runs nothing)", False)
    dry_run: bool = flag(
        "print each cell's lmp_trainer command (the queue adds --device) and exit; with "
        "--executor slurm, the sbatch script first",
        False,
    )
    executor: str = _executor_flag(
        "local: the queue over --devices; submitit-local: every unfinished cell at once as "
        "submitit local jobs; slurm: one Slurm job array, submitted without waiting "
        "(default: local)",
        "local",
        choices=EXECUTORS,
    )
    slurm_partition: str | None = _executor_flag(
        "partition the array is submitted to", metavar="NAME"
    )
    slurm_time: str | None = _executor_flag(
        "time limit of each array task: minutes or [DAYS-]HOURS:MINUTES[:SECONDS]; a task "
        "out of time saves and is requeued (default: 24:00:00)",
        metavar="TIME",
    )
    slurm_gpus_per_task: int = _executor_flag(
        "GPUs of each cell; more than 1 runs the cell under torchrun (default: 0, the CPU)",
        0,
        metavar="N",
    )
    slurm_array_parallelism: int | None = _executor_flag("array tasks running at once", metavar="N")
    slurm_setup: tuple[str, ...] = _executor_flag(
        "a shell line the sbatch script runs before the cell (repeat for more), e.g. "
        "'source .venv/bin/activate'",
        (),
        action="append",
        metavar="LINE",
    )
    slurm_extra: tuple[str, ...] = _executor_flag(
        "any other sbatch option, e.g. account=myproj or constraint=a100 (repeatable)",
        (),
        action="append",
        metavar="KEY=VALUE",
    )

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"--jobs {self.jobs} must be at least 1")
        if not any(name.strip() for name in self.devices.split(",")):
            raise UsageError(f"--devices {self.devices!r} names no device")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        given = [name for name, value in self.slurm_flags().items() if value]
        if given and self.executor != "slurm":
            raise UsageError(f"{', '.join(given)}: only for --executor slurm")
        if self.slurm_gpus_per_task < 0:
            raise UsageError(f"--slurm-gpus-per-task {self.slurm_gpus_per_task} must be at least 0")
        parallel = self.slurm_array_parallelism
        if parallel is not None and parallel < 1:
            raise UsageError(f"--slurm-array-parallelism {parallel} must be at least 1")
        # Reading them is their check: a bad one raises here, before the grid is read.
        self.slurm_time_min()
        self.slurm_extra_parameters()

    def slurm_flags(self) -> dict[str, object]:
        """Each `--slurm-*` flag and its value (None, 0 or empty: not given)."""
        return {
            "--" + name.replace("_", "-"): getattr(self, name)
            for name in (
                "slurm_partition", "slurm_time", "slurm_gpus_per_task",
                "slurm_array_parallelism", "slurm_setup", "slurm_extra",
            )
        }  # fmt: skip

    def slurm_time_min(self) -> int:
        """`--slurm-time` in whole minutes."""
        if not self.slurm_time:
            return DEFAULT_SLURM_TIME_MIN
        return slurm_minutes(self.slurm_time)

    def slurm_extra_parameters(self) -> dict[str, Any]:
        """`--slurm-extra KEY=VALUE` (or a bare KEY for a switch) -> sbatch parameters."""
        extra: dict[str, Any] = {}
        for item in self.slurm_extra:
            key, has_value, value = item.partition("=")
            key = key.strip().removeprefix("--")
            if not key or (has_value and not value):
                raise UsageError(
                    f"--slurm-extra {item!r}: give KEY=VALUE (e.g. account=myproj) or KEY"
                )
            extra[key] = value if has_value else True
        return extra


def slurm_minutes(text: str) -> int:
    """Slurm's time formats (`90`, `1:30:00`, `2-00:00:00`, ...) in whole minutes."""
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    try:
        parts = [int(p) for p in clock.split(":")]
        day_count = int(days)
    except ValueError:
        parts, day_count = [], 0
    if not 1 <= len(parts) <= 3 or min([*parts, day_count]) < 0:
        raise UsageError(
            f"--slurm-time {text!r}: give minutes, or [DAYS-]HOURS:MINUTES[:SECONDS] "
            "(e.g. 90, 1:30:00, 2-00:00:00)"
        )
    if "-" in text:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
    else:  # MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS
        hours, minutes, seconds = [0, *parts, 0][:3] if len(parts) < 3 else parts
    total = ((day_count * 24 + hours) * 60 + minutes) + (1 if seconds else 0)
    if total <= 0:
        raise UsageError(f"--slurm-time {text!r} must be more than zero")
    return total


GRID_SECTIONS: dict[str, type] = {"grid": GridConfig}
