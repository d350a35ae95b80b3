"""Option checks of `lmp_generator` and `lmp_plotstats`: values that parse but cannot work.

Each check raises UsageError (one `error:` line, exit 2) naming the flag, the value and what is
allowed, before a checkpoint is read or a plot is drawn. No torch import here: `lmp_plotstats`
runs without it.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmplay.errors import UsageError
from lmplay.train.preflight import check_writable_folder

MAX_NEW_TOKENS = 1_000_000
MAX_SEED = 2**63 - 1  # torch's generators take a signed 64-bit seed


def validate_generate_args(
    *,
    model: Path,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
) -> None:
    if model.is_dir():
        raise UsageError(f"--model {model}: is a folder; name a checkpoint file")
    if max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise UsageError(
            f"--max-new-tokens must be at most {MAX_NEW_TOKENS:,}, got {max_new_tokens}"
        )
    if not math.isfinite(temperature):
        raise UsageError(f"--temperature must be a finite number, got {temperature}")
    if temperature < 0:
        raise UsageError(f"--temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top-k must be >= 0 (0 disables top-k filtering), got {top_k}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise UsageError(f"--top-p must be in (0, 1], got {top_p}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be an integer in [0, 2**63 - 1], got {seed}")


def validate_plot_out_dir(out_dir: Path, given: bool) -> None:
    """The folder plots go to can be written (created if missing); `given`: by --out-dir."""
    flag = "--out-dir" if given else "plots' folder (the default --out-dir)"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{flag} {out_dir}: is a file, not a folder")
    check_writable_folder(out_dir, "word_accuracy_diff.svg", flag)
