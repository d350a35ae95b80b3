"""What a run takes from where it starts: its own checkpoint, `--initial-model`, or nothing.

The policy, in the order `build_session` applies it:
- *which source*: `--model` if the file exists (the run goes on), else `--initial-model` (a new
  run from those weights; the file is read, never written), else a fresh start;
- *what changed*: the plan (refused unless `--override-plan`), the settings and data files a
  resume must repeat (refused unless `--allow-changed`), the optimizer's name;
- *what is skipped*: a fresh optimizer (`--ignore-optimizer`, or an `--initial-model` whose
  moments do not fit), the history (`--reset-history`, or a new run from `--initial-model`);
- *re-warmup*: a fresh optimizer on trained weights warms its LR up again from the run's step.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lmplay.compat import old_default_checkpoint
from lmplay.config import DEFAULT_OUT_DIR, RunConfig
from lmplay.errors import CheckpointError, UsageError
from lmplay.models import ModelArgs
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.plan.registry import plan_from_checkpoint
from lmplay.train.checkpoint import CheckpointMap, load_checkpoint
from lmplay.train.fingerprint import check_resume
from lmplay.train.optim import DecayGroups

HISTORY = ("plan", "runner", "lr_schedule", "stats", "rng", "grad_scaler", "stop_rules", "best")
"""Components that say where a run is, as opposed to what it has learned (weights, moments)."""


@dataclass
class Source:
    """Where the run's state comes from: `path` (None: a fresh start) and its components."""

    path: Path | None = None
    stored: dict[str, Any] = field(default_factory=dict)
    from_initial: bool = False  # --initial-model: a new run from these weights

    @property
    def resumes(self) -> bool:
        """The run goes on from its own checkpoint."""
        return self.path is not None and not self.from_initial

    def component(self, name: str) -> dict[str, Any] | None:
        return self.stored.get(name)

    def fresh_optimizer_on_trained_weights(self, cfg: RunConfig) -> bool:
        """Weights come from the run's own checkpoint but its optimizer state does not: the LR
        warms up again from the run's step."""
        return self.resumes and (cfg.optim.ignore_optimizer or "optimizer" not in self.stored)


def find_source(cfg: RunConfig, plan: TrainingPlan) -> Source:
    """The run's own checkpoint, else `--initial-model` (a checkpoint or transformers folder)."""
    own = cfg.run_files().checkpoint
    if own.exists():
        return Source(own, load_checkpoint(own)["components"])
    _refuse_old_default_location(cfg, plan)
    if not cfg.io.initial_model:
        return Source()
    initial = Path(cfg.io.initial_model)
    if not initial.exists():
        raise UsageError(f"--initial-model {initial}: no such file")
    if initial.is_dir():
        from lmplay.models.hf.importing import import_folder

        return Source(initial, {"model": import_folder(initial)}, from_initial=True)
    return Source(initial, load_checkpoint(initial)["components"], from_initial=True)


def _refuse_old_default_location(cfg: RunConfig, plan: TrainingPlan) -> None:
    """Refuse to start afresh beside a run of this plan saved where lmplay 0.1 put it
    (`compat.old_default_checkpoint`).

    Runs without --out-dir used to share `out_gpt/EXP.lmp` whatever their plan; they now live in
    `out_gpt/PLAN/`. A checkpoint of the same plan in the old place is that run: say how to move
    it rather than silently starting over. One of another plan is another run and stays put.
    """
    if cfg.io.out_dir is not None or cfg.io.model is not None:
        return
    old = old_default_checkpoint(DEFAULT_OUT_DIR, cfg.run_files().checkpoint.name)
    if not old.is_file():
        return
    try:
        stored = load_checkpoint(old)["components"]["plan"]["state_args"]
        stored_name = plan_from_checkpoint(stored, origin=str(old)).name
    except (CheckpointError, UsageError, KeyError, TypeError):
        return  # not a readable run of any plan: nothing to resume there
    if stored_name != plan.name:
        return
    new_dir = cfg.out_dir()
    belongings = sorted(old.parent.glob(f"{old.stem}.*"))  # checkpoints, stats, stage copies
    move = f"mkdir -p {shlex.quote(str(new_dir))} && mv " + " ".join(
        shlex.quote(str(path)) for path in [*belongings, new_dir]
    )
    raise UsageError(
        f"{old} is a run of plan '{stored_name}' from before runs were kept per plan; to resume "
        f"it, move it first: {move} (or pass --model {old} --out-dir {old.parent} to keep it "
        "where it is)"
    )


ProgressLoader = Callable[[dict[str, Any]], None]


def progress_loader(
    cfg: RunConfig, plan: TrainingPlan, progress: PlanProgress, source: Source, notes: list[str]
) -> ProgressLoader | None:
    """How the stored plan progress is taken: as it is, adopted by a changed plan
    (`--override-plan`), or not at all (None: the history restarts)."""
    stored = source.component("plan")
    if stored is None or not source.resumes or cfg.io.reset_history:
        return None
    try:
        stored_plan = plan_from_checkpoint(stored["state_args"], origin="stored in the checkpoint")
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint plan component is malformed (missing {error}); pass --reset-history to "
            "keep only the weights, or a different --model"
        ) from None
    old, new = stored_plan.stage_fingerprints(), plan.stage_fingerprints()
    if old == new:
        return progress.load_state_dict
    if not cfg.data.override_plan:
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), len(old))
        change = f"from stage {first + 1} on" if first < len(new) else "stages removed"
        raise UsageError(
            f"--training-plan {cfg.data.training_plan} differs ({change}) from the plan "
            f"'{stored_plan.name}' this run was trained with; pass --override-plan to switch "
            "plans (completed unchanged stages stay done) or a different --model"
        )

    def adopt(state: dict[str, Any]) -> None:
        notes.append("plan changed (--override-plan): " + progress.adopt(state))

    return adopt


def changed_datasets(
    cfg: RunConfig,
    model_args: ModelArgs,
    source: Source,
    data: dict[str, Any],
    notes: list[str],
) -> set[str]:
    """Refuse settings and data that changed since the checkpoint; the datasets that did."""
    runner = source.component("runner")
    args = runner.get("state_args") if isinstance(runner, dict) else None
    args = args if isinstance(args, dict) else {}
    stored_config = args.get("config")
    changes, changed = check_resume(
        stored_config if isinstance(stored_config, dict) else {},
        effective_config(cfg, model_args),
        args.get("data"),
        data,
        cfg.data.allowed_changes(),
        Path(source.path or cfg.run_files().checkpoint),
    )
    notes.extend(changes)
    return changed


def effective_config(cfg: RunConfig, args: ModelArgs) -> dict[str, Any]:
    """The flags as this run applies them: --dropout resolved to the model's dropout."""
    config = cfg.to_dict()
    config["model"]["dropout"] = args.dropout
    return config


def restore(
    table: CheckpointMap,
    source: Source,
    cfg: RunConfig,
    model: nn.Module,
    groups: DecayGroups,
    keep_history: bool,
    notes: list[str],
) -> None:
    """Load every component the run takes from `source` into `table`'s components;
    `keep_history`: plan progress, counters and stats go on."""
    if source.path is None:
        return
    fresh = None
    if source.from_initial:
        fresh = fresh_optimizer_reason(cfg, source.stored, model, groups)
        if fresh is not None:
            notes.append(f"fresh optimizer: {fresh} ({source.path})")
    skip = _components_to_skip(cfg, source, keep_history, fresh is not None)
    notes.extend(table.load(source.stored, source.path, skip))
    if cfg.io.reset_history:
        notes.append("history reset: plan progress, counters and stats start over")


def restart_stage_on_changed_data(
    progress: PlanProgress, changed: set[str], notes: list[str]
) -> None:
    if progress.finished or progress.batcher_state is None:
        return
    stage = progress.plan.stages[progress.stage_index]
    if changed & set(stage.datasets):
        progress.batcher_state = None
        notes.append(f"stage '{stage.name}' starts over: its data changed")


def _components_to_skip(
    cfg: RunConfig, source: Source, keep_history: bool, fresh_optimizer: bool
) -> set[str]:
    """What this run does not take from the checkpoint: a fresh optimizer, or fresh history."""
    stored = source.stored
    skip: set[str] = set()
    if fresh_optimizer or cfg.optim.ignore_optimizer or "optimizer" not in stored:
        skip.add("optimizer")
    else:
        _check_optimizer_name(stored["optimizer"], cfg, source.path)
    if not keep_history:
        skip.update(HISTORY)
    elif "grad_scaler" not in stored:
        skip.add("grad_scaler")  # fp16 switched on for a run that had none: a fresh scale
    # Checkpoints from before stop rules and best checkpoints: nothing fired, nothing ranked.
    skip.update(name for name in ("stop_rules", "best") if name not in stored)
    return skip


def fresh_optimizer_reason(
    cfg: RunConfig, stored: dict[str, Any], model: nn.Module, groups: DecayGroups
) -> str | None:
    """Why a run from --initial-model starts a fresh optimizer; None: it takes the stored one.

    Moments belong to parameters by position, so they are taken only when asked for and when
    every parameter, its shape, and the decay groups are exactly this run's.
    """
    if "optimizer" not in stored:
        return "--initial-model holds no optimizer state"
    if not cfg.optim.initial_model_optimizer:
        return (
            "the optimizer state of --initial-model is dropped (--initial-model-optimizer "
            "keeps it when the parameters match)"
        )
    state = (stored.get("model") or {}).get("state")
    shapes = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored_args = stored["optimizer"].get("state_args") or {}
    if shapes != ours or stored_args.get("groups") != groups.table():
        return (
            "--initial-model-optimizer: the parameters of --initial-model differ from this "
            "run's (adapters, frozen or resized layers), its optimizer state is dropped"
        )
    if stored_args.get("name") != cfg.optim.optimizer:
        return (
            f"--initial-model-optimizer: --initial-model was trained with "
            f"{stored_args.get('name')}, not {cfg.optim.optimizer}; its state is dropped"
        )
    return None


def _check_optimizer_name(stored: dict[str, Any], cfg: RunConfig, source: Path | None) -> None:
    stored_name = stored_arg(stored, "name", "optimizer", source)
    if stored_name != cfg.optim.optimizer:
        raise UsageError(
            f"checkpoint {source} was trained with --optimizer {stored_name}, not "
            f"{cfg.optim.optimizer}; pass --optimizer {stored_name} or --ignore-optimizer"
        )


def stored_arg(stored: dict[str, Any], key: str, component: str, source: Path | None) -> Any:
    try:
        return stored["state_args"][key]
    except (KeyError, TypeError):
        raise CheckpointError(
            f"checkpoint {source}: component '{component}' is malformed (no state_args "
            f"'{key}'); the file was left as it is"
        ) from None


def provenance(source: Source) -> dict[str, Any] | None:
    """{"path", "step"} of the --initial-model a run started from: read from the source at the
    start (its step; None for a transformers folder), from the run's checkpoint on a resume."""
    runner = source.component("runner")
    if not source.from_initial:
        args = runner.get("state_args") if isinstance(runner, dict) else None
        found = args.get("initial_model") if isinstance(args, dict) else None
        return found if isinstance(found, dict) else None
    state = runner.get("state") if isinstance(runner, dict) else None
    step = state.get("step") if isinstance(state, dict) else None
    return {"path": str(source.path), "step": step}
