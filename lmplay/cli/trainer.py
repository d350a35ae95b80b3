"""`lmp_trainer`: train a registered architecture through a training plan.

    lmp_trainer                                   # bundled plan 'tiny', --exp gpt2ish, CPU-sized
    lmp_trainer --training-plan plans/wiki.json --exp gpt2ish_124m --device cuda --amp
    lmp_trainer --exp list                        # registered architectures

Rerunning the same command resumes from the checkpoint (`OUT_DIR/EXP.lmp` unless --model;
OUT_DIR defaults to `out_gpt/PLAN`). Under `torchrun --nproc-per-node=N -m lmplay.cli.trainer ...`
N processes train one run together.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmplay.cli import plain_warnings
from lmplay.cli.flags import build_parser as build_flag_parser
from lmplay.cli.flags import parse_flags
from lmplay.config import SECTIONS, RunConfig
from lmplay.errors import UsageError, WriteFailed

if TYPE_CHECKING:
    from lmplay.plan.format import TrainingPlan
    from lmplay.train.placement import Placement

EXIT_USAGE = 2
EXIT_FAILED = 3  # stopped during the run: diverged, or a save failed; the last save is intact
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """One flag per RunConfig field, so help and defaults come from config.py alone."""
    return build_flag_parser(
        "lmp_trainer",
        "Train a small language model through a training plan; rerun to resume.",
        SECTIONS,
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    sections = {}
    for section, section_class in SECTIONS.items():
        values = {
            f.name: getattr(args, f"{section}.{f.name}") for f in dataclasses.fields(section_class)
        }
        sections[section] = section_class(**values)
    return RunConfig(**sections)


def parse_config(argv: Sequence[str] | None = None) -> RunConfig:
    """The run's configuration: defaults, then `--config FILE`, then the command line."""
    _, values = parse_flags(build_parser(), SECTIONS, argv)
    return RunConfig(**{name: SECTIONS[name](**fields) for name, fields in values.items()})


def main(argv: Sequence[str] | None = None) -> int:
    # Light (no torch); imported here so that lmp_grid reads the trainer's flags without it.
    from lmplay.train.distributed.world import hold_exit_code, quiet_other_ranks

    plain_warnings.install()
    quiet_other_ranks()  # under torchrun rank 0 alone prints (bad flags included)
    # hold_exit_code: under torchrun, teardown must not turn the code into a signal death.
    try:
        return run(parse_config(argv))
    except SystemExit as exit_:  # argparse: --help, or a flag it cannot parse
        hold_exit_code(exit_.code if isinstance(exit_.code, int) else EXIT_USAGE)
        raise
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        hold_exit_code(EXIT_USAGE)
        return EXIT_USAGE
    except (WriteFailed, OSError) as error:
        print(f"error: {_write_failure(error)}; training stopped", file=sys.stderr)
        hold_exit_code(EXIT_FAILED)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Only before training starts (loading data, building the model): once the loop runs,
        # Ctrl+C is a stop request that saves. Nothing has been written yet.
        print("interrupted before training started; no checkpoint was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(cfg: RunConfig) -> int:
    from lmplay.train.distributed.world import is_main_process

    if cfg.model.exp == "list":
        from lmplay.models import describe_experiments
        from lmplay.models.hf.experiments import HF_EXP_HELP

        print(describe_experiments(cfg.model.size_overrides()))
        print(HF_EXP_HELP)
        return 0
    if cfg.io.trackers() and not (cfg.system.describe or cfg.system.save_datasets):
        from lmplay.stats.trackers import check_installed

        check_installed(cfg.io.trackers())
    if cfg.system.describe or cfg.system.save_datasets or not is_main_process():
        # --describe and --save-datasets write none of the run's files; under torchrun rank 0
        # alone writes, so it alone checks the folder and holds the lock.
        return _train(cfg)
    from lmplay.train.lock import run_lock
    from lmplay.train.preflight import check_run_outputs

    # Before the heavy imports, so that a second run on the same checkpoint is refused at once.
    files = cfg.run_files()
    check_run_outputs(files, _model_flag(cfg))
    with run_lock(files):
        return _train(cfg)


def _model_flag(cfg: RunConfig) -> str:
    return "--model" if cfg.io.model else "--out-dir"


def _train(cfg: RunConfig) -> int:
    # Heavy imports wait until the flags are known to be valid, so `--help` and bad flags are fast.
    from lmplay.models import get_experiment
    from lmplay.models.hf.experiments import is_hf_exp

    if not is_hf_exp(cfg.model.exp):  # an hf: folder is read when the run starts (or resumes)
        get_experiment(cfg.model.exp)
    from lmplay.plan.registry import load_plan

    plan = load_plan(cfg.data.training_plan)
    if cfg.system.save_datasets:
        from lmplay.plan.saving import datasets_folder, plan_sources, save_plan_datasets
        from lmplay.plan.saving import saved_copy_path as copy_path
        from lmplay.train.preflight import check_writable_folder

        folder = datasets_folder()
        names = [copy_path(spec, folder).name for spec in plan_sources(plan)]
        if names:  # before any loading: a folder that cannot take the copies is exit 2
            check_writable_folder(folder, max(names, key=len), "$LMP_DATASETS")
        save_plan_datasets(plan)
        return 0
    from lmplay.train.distributed.process_group import finish, start
    from lmplay.train.distributed.world import world_from_env
    from lmplay.train.placement import resolve_placement
    from lmplay.train.preflight import check_run_outputs

    world = world_from_env(cfg.system.parallel)
    placement = resolve_placement(cfg.system, world)  # where and how the whole run computes
    if not cfg.system.describe and world.is_main:
        stages = [stage.name for stage in plan.stages]
        check_run_outputs(cfg.run_files(), _model_flag(cfg), stages)
    # The flags and the plan are valid: only now the ranks of a torchrun job meet.
    start(world, placement.device)
    try:
        code = _train_placed(cfg, placement, plan)
    except BaseException:
        finish(world, wait=False)
        raise
    finish(world, code)
    return code


def _train_placed(cfg: RunConfig, placement: Placement, plan: TrainingPlan) -> int:
    from lmplay.train.describe import describe_session
    from lmplay.train.session import build_session
    from lmplay.train.trainer import Trainer, TrainingDiverged

    session = build_session(cfg, placement, plan)
    print(describe_session(session, full=cfg.system.describe), file=sys.stderr)
    if cfg.system.describe:
        return 0
    code = 1  # an exception ends the trackers' runs as failed
    try:
        code = Trainer(session).fit()
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_FAILED
    finally:
        session.stats.close(code)
    return code


def _write_failure(error: OSError | WriteFailed) -> str:
    if isinstance(error, WriteFailed):
        return str(error)
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


if __name__ == "__main__":
    sys.exit(main())
