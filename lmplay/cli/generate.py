"""lmp_generator: continue a prompt with a trained checkpoint.

lmp_generator "Once upon a time" --model out_gpt/gpt2ish.lmp --max-new-tokens 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.cli.option_checks import validate_generate_args
from lmplay.errors import UsageError
from lmplay.models.generation import check_sampling, generate
from lmplay.train.checkpoint import load_checkpoint, restore_model


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmp_generator", description=__doc__.splitlines()[0])
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--model", required=True, type=Path, help="checkpoint file written by training")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 picks the likeliest token")
    p.add_argument("--top-k", type=int, default=50, help="0 disables top-k filtering")
    p.add_argument("--top-p", type=float, default=0.95, help="1 disables nucleus filtering")
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    return p


def _load_model(path: Path, device: torch.device) -> nn.Module:
    """Rebuild the checkpoint's model on `device`, in eval mode, through the trainer's loader."""
    if not path.is_file():
        raise UsageError(f"--model {path}: no such file")
    _, _, model = restore_model(load_checkpoint(path)["components"]["model"], path)
    return model.to(device).eval()


def _one_line(message: str, limit: int = 300) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _device(name: str) -> torch.device:
    from lmplay.train.preflight import check_device

    return check_device(name)


def _check_flags(args: argparse.Namespace) -> None:
    validate_generate_args(
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    try:
        check_sampling(args.temperature, args.top_k or None, args.top_p)
    except ValueError as e:
        raise UsageError("--" + str(e).replace("_", "-")) from None


def _tokenizer() -> Any:
    from lmplay.data.tokenizer import get_tokenizer

    return get_tokenizer()


def run(args: argparse.Namespace) -> str:
    """The prompt followed by its continuation."""
    _check_flags(args)
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
    args = _parser().parse_args(argv)
    try:
        text = run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)


if __name__ == "__main__":
    main()
