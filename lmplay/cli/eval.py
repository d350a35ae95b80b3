"""lmp_eval: loss and perplexity of a checkpoint on texts or on a plan's validation sets.

    lmp_eval out_gpt/tiny/gpt2ish.lmp --training-plan tiny --json scores.json
    lmp_eval exported/gpt2ish --texts my_texts.jsonl

The figures are computed exactly as lmp_trainer validates (same samples, same loss), so on a
finished run's plan they equal the run's last validation records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lmplay.cli import plain_warnings
from lmplay.cli.flags import build_parser as build_flag_parser
from lmplay.cli.flags import parse_flags
from lmplay.config import EVAL_SECTIONS, EvalConfig
from lmplay.errors import CheckpointError, UsageError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = build_flag_parser("lmp_eval", __doc__.splitlines()[0], EVAL_SECTIONS)
    parser.add_argument("model", type=Path, help="checkpoint (.lmp) or transformers folder")
    return parser


def read_texts(path: Path) -> list[str]:
    """A .jsonl file's "text" values, one per line; any other file as one text."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--texts {path}: cannot read: {error}") from None
    if path.suffix != ".jsonl":
        return [content]
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"--texts {path}: line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UsageError(f'--texts {path}: line {number} has no "text" string')
        texts.append(row["text"])
    return texts


def run(argv: Sequence[str] | None = None) -> dict[str, dict[str, float | int]]:
    args, values = parse_flags(_parser(), EVAL_SECTIONS, argv)
    cfg = dataclasses.asdict(EvalConfig(**values["eval"]))  # checks every value
    texts = read_texts(Path(cfg["texts"])) if cfg["texts"] is not None else None
    from lmplay.api import load, score

    loaded = load(args.model, cfg["device"])
    scores = score(
        loaded,
        texts,
        plan=cfg["training_plan"],
        set=cfg["set"],
        validation_samples=cfg["validation_samples"],
        batch_size=cfg["validation_batch_size"],
        num_proc=cfg["data_workers"] or 1,
    )
    for name, figures in scores.items():
        print(
            f"{name}: loss {figures.loss:.4f}, perplexity {figures.perplexity:.2f}, "
            f"{figures.tokens:,} tokens in {figures.samples:,} samples"
        )
    result = {name: figures.to_dict() for name, figures in scores.items()}
    if cfg["json"] is not None:
        from lmplay.atomic import atomic_write_bytes

        atomic_write_bytes(Path(cfg["json"]), (json.dumps(result, indent=2) + "\n").encode())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    plain_warnings.install()
    try:
        run(argv)
    except (UsageError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
