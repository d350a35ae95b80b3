"""lmp_generator: continue a prompt with a trained checkpoint.

lmp_generator "Once upon a time" --model out_gpt/tiny/gpt2ish.lmp --max-new-tokens 100
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.cli import plain_warnings
from lmplay.cli.flags import build_parser as build_flag_parser
from lmplay.cli.flags import parse_flags
from lmplay.config import GENERATE_SECTIONS, GenerateConfig
from lmplay.errors import UsageError
from lmplay.models.generation import generate
from lmplay.train.checkpoint import load_checkpoint, restore_model


def _parser() -> argparse.ArgumentParser:
    parser = build_flag_parser("lmp_generator", __doc__.splitlines()[0], GENERATE_SECTIONS)
    parser.add_argument("prompt", help="text to continue")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The prompt and every GenerateConfig field (defaults, `--config FILE`, command line)."""
    args, values = parse_flags(_parser(), GENERATE_SECTIONS, argv)
    settings = dataclasses.asdict(GenerateConfig(**values["generate"]))  # checks every value
    settings["model"] = Path(settings["model"])
    return argparse.Namespace(prompt=args.prompt, **settings)


def _load_model(path: Path, device: torch.device) -> nn.Module:
    """Rebuild the checkpoint's model on `device`, in eval mode, through the trainer's loader."""
    if not path.is_file():
        raise UsageError(f"--model {path}: no such file")
    _, _, model = restore_model(load_checkpoint(path)["components"]["model"], path)
    return model.to(device).eval()


def _device(name: str) -> torch.device:
    from lmplay.train.preflight import check_device

    return check_device(name)


def _tokenizer() -> Any:
    from lmplay.data.tokenizer import get_tokenizer

    return get_tokenizer()


def run(args: argparse.Namespace) -> str:
    """The prompt followed by its continuation."""
    model = _load_model(args.model, _device(args.device))
    tok = _tokenizer()
    if model.args.vocab_size < tok.n_vocab:
        raise UsageError(
            f"--model {args.model} has a {model.args.vocab_size}-token vocabulary; "
            f"the tokenizer needs {tok.n_vocab}"
        )
    eot = tok.eot_token
    # An empty prompt starts from end-of-text, the token every training document follows.
    prompt_ids = tok.encode(args.prompt, allowed_special="all") or [eot]
    if len(prompt_ids) > model.args.context_len:
        raise UsageError(
            f"prompt is {len(prompt_ids)} tokens; the model's context is {model.args.context_len}"
        )
    new_ids = generate(
        model,
        prompt_ids,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        top_p=args.top_p,
        seed=args.seed,
        stop_token=eot,
    )
    return args.prompt + tok.decode(new_ids)


def main(argv: list[str] | None = None) -> None:
    plain_warnings.install()
    try:
        text = run(parse_args(argv))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)


if __name__ == "__main__":
    main()
