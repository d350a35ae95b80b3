"""Every setting of every command, its default, its flag and its check.

- `sections.py`: the sections of `lmp_trainer`'s configuration (model, data, batch, optim, io,
  stop, samples, system, lora), one field per flag with its help and default;
- `run.py`: `RunConfig`, all sections checked together, and the files a run writes;
- `commands.py`: `lmp_generator`, `lmp_eval`, `lmp_plotstats` and `lmp_grid` (GenerateConfig,
  EvalConfig, PlotConfig, GridConfig), each checked on construction.

Each command builds its parser from these dataclasses (`lmplay.cli.flags`), so a flag cannot
drift from the value it sets, and every option is checked here, once, when its dataclass is
built: bad values end in one `error:` line before anything is read. No torch here:
`lmp_plotstats` imports this package and must start without it.
"""

from lmplay.config.commands import (
    DEFAULT_SLURM_TIME_MIN,
    EVAL_SECTIONS,
    EXECUTOR_GROUP,
    EXECUTORS,
    GENERATE_SECTIONS,
    GRID_SECTIONS,
    MAX_NEW_TOKENS,
    PLOT_AVERAGE_WINDOW,
    PLOT_BANDS,
    PLOT_OUT_TYPES,
    PLOT_SECTIONS,
    EvalConfig,
    GenerateConfig,
    GridConfig,
    PlotConfig,
    check_plot_values,
    slurm_minutes,
)
from lmplay.config.run import MAX_LR, MAX_SEED, SECTIONS, RunConfig, exp_file_stem, plan_label
from lmplay.config.sections import (
    AMP_DTYPES,
    DEFAULT_OUT_DIR,
    DEFAULT_PROMPTS,
    LR_SCHEDULES,
    OPTIMIZER_NAMES,
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

__all__ = [
    "AMP_DTYPES",
    "DEFAULT_OUT_DIR",
    "DEFAULT_PROMPTS",
    "DEFAULT_SLURM_TIME_MIN",
    "EVAL_SECTIONS",
    "EXECUTORS",
    "EXECUTOR_GROUP",
    "GENERATE_SECTIONS",
    "GRID_SECTIONS",
    "LR_SCHEDULES",
    "MAX_LR",
    "MAX_NEW_TOKENS",
    "MAX_SEED",
    "OPTIMIZER_NAMES",
    "PARALLELISMS",
    "PLOT_AVERAGE_WINDOW",
    "PLOT_BANDS",
    "PLOT_OUT_TYPES",
    "PLOT_SECTIONS",
    "RESUME_SETTINGS",
    "SECTIONS",
    "TRACKERS",
    "AdapterConfig",
    "BatchConfig",
    "DataConfig",
    "EvalConfig",
    "GenerateConfig",
    "GridConfig",
    "ModelConfig",
    "OptimConfig",
    "PlotConfig",
    "RunConfig",
    "RunIOConfig",
    "SamplesConfig",
    "StopConfig",
    "SystemConfig",
    "check_plot_values",
    "exp_file_stem",
    "plan_label",
    "slurm_minutes",
]
