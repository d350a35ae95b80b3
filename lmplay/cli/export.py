"""lmp_export: write a checkpoint as a transformers folder (safetensors, config, tokenizer).

lmp_export out_gpt/gpt2ish.lmp exported/gpt2ish

`transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR)` and
`AutoTokenizer.from_pretrained(OUT_DIR)` then load it offline. gpt2ish and gpt2ish_tanh become
GPT2LMHeadModel, modern and modern_tied LlamaForCausalLM, hf: models their own class; LoRA
adapters are merged. The folder appears complete or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lmplay.cli import plain_warnings
from lmplay.errors import UsageError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmp_export", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="checkpoint (.lmp) written by lmp_trainer")
    p.add_argument("out_dir", type=Path, help="folder to create (must not exist, or be empty)")
    return p


def export(model_path: Path, out_dir: Path) -> None:
    """Write `out_dir`; UsageError for a bad checkpoint, an architecture with no mapping, or an
    `out_dir` that already holds files (nothing is overwritten)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir} exists and is not an empty folder; choose a new OUT_DIR")
    if not model_path.is_file():
        raise UsageError(f"{model_path}: no such checkpoint file")
    from lmplay.models.hf.export import write_hf_folder
    from lmplay.train.checkpoint import load_checkpoint, restore_model

    stored = load_checkpoint(model_path)["components"]["model"]
    exp, args, model = restore_model(stored, model_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write_hf_folder(model.eval(), exp, args, temp)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(temp, out_dir)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    plain_warnings.install()
    args = _parser().parse_args(argv)
    try:
        export(args.model, args.out_dir)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
