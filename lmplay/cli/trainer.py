"""`lmp_trainer`: train a registered architecture through a training plan.

    lmp_trainer                                   # bundled plan 'tiny', --exp gpt2ish, CPU-sized
    lmp_trainer --training-plan plans/wiki.json --exp gpt2ish_med --device cuda --amp
    lmp_trainer --exp list                        # registered architectures

Rerunning the same command resumes from the checkpoint (`OUT_DIR/EXP.lmp` unless --model).
Under `torchrun --nproc-per-node=N -m lmplay.cli.trainer ...` N processes train one run together.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence

from lmplay.config import SECTIONS, RunConfig
from lmplay.errors import UsageError

if typing.TYPE_CHECKING:
    from lmplay.train.distributed import World

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """One flag per RunConfig field, so help and defaults come from config.py alone."""
    parser = argparse.ArgumentParser(
        prog="lmp_trainer",
        description="Train a small language model through a training plan; rerun to resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for section, section_class in SECTIONS.items():
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(section_class):
            _add_flag(group, section, f, section_class)
    return parser


def _add_flag(
    group: argparse._ArgumentGroup, section: str, f: dataclasses.Field, section_class: type
) -> None:
    flag = "--" + f.name.replace("_", "-")
    kind = _base_type(typing.get_type_hints(section_class)[f.name])
    dest = f"{section}.{f.name}"
    help_text = f.metadata["help"]
    if kind is bool:
        group.add_argument(flag, dest=dest, action="store_true", help=help_text)
        return
    group.add_argument(
        flag,
        dest=dest,
        type=kind,
        default=f.default,
        choices=f.metadata.get("choices"),
        metavar=f.name.upper(),
        help=help_text,
    )


def _base_type(hint: object) -> type:
    """`int | None` -> int."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint  # type: ignore[return-value]


def config_from_args(args: argparse.Namespace) -> RunConfig:
    sections = {}
    for section, section_class in SECTIONS.items():
        values = {
            f.name: getattr(args, f"{section}.{f.name}") for f in dataclasses.fields(section_class)
        }
        sections[section] = section_class(**values)
    return RunConfig(**sections)


def main(argv: Sequence[str] | None = None) -> int:
    from lmplay.train.distributed import hold_exit_code, quiet_other_ranks

    quiet_other_ranks()  # under torchrun, rank 0 alone prints (bad flags included)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        hold_exit_code(exit.code if isinstance(exit.code, int) else EXIT_USAGE)
        raise
    try:
        return run(config_from_args(args))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        hold_exit_code(EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Only before training starts (loading data, building the model): once the loop runs,
        # Ctrl+C is a stop request that saves. Nothing has been written yet.
        print("interrupted before training started; no checkpoint was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(cfg: RunConfig) -> int:
    # Heavy imports wait until the flags are known to be valid, so `--help` and bad flags are fast.
    from lmplay.models import describe_experiments, get_experiment

    if cfg.model.exp == "list":
        print(describe_experiments(cfg.model.size_overrides()))
        return 0
    get_experiment(cfg.model.exp)
    from lmplay.plan.registry import load_plan

    plan = load_plan(cfg.data.training_plan)
    if cfg.system.save_datasets:
        from lmplay.plan.saving import save_plan_datasets

        save_plan_datasets(plan)
        return 0
    from lmplay.train import distributed
    from lmplay.train.session import resolve_device

    # The flags and the plan are valid: only now the ranks of a torchrun job meet.
    world = distributed.world_from_env(cfg.system.parallel)
    distributed.start(world, resolve_device(cfg.system.device))
    try:
        code = train(cfg, world)
    except BaseException:
        distributed.finish(world, wait=False)
        raise
    distributed.finish(world, code)
    return code


def train(cfg: RunConfig, world: World) -> int:
    from lmplay.train.describe import describe_session
    from lmplay.train.session import build_session
    from lmplay.train.trainer import Trainer, TrainingDiverged

    session = build_session(cfg, world)
    print(describe_session(session, full=cfg.system.describe), file=sys.stderr)
    if cfg.system.describe:
        return 0
    try:
        return Trainer(session).fit()
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
