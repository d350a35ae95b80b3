"""The compatibility readers stay light (plan and stats code imports them without torch) and
each turns its old input into today's form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lmplay.compat import (
    checkpoint_v1_components,
    old_default_checkpoint,
)


def test_importing_compat_imports_no_torch() -> None:
    code = "import sys, lmplay.compat; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_format_1_component_names_become_format_2_names() -> None:
    old = {"model": 1, "optimizers": 2, "lr_schedulers": 3, "curriculum": 4, "stats": 5}
    assert checkpoint_v1_components(old) == {
        "model": 1,
        "optimizer": 2,
        "lr_schedule": 3,
        "plan": 4,
        "stats": 5,
    }


def test_the_old_default_checkpoint_is_shared_by_every_plan() -> None:
    assert old_default_checkpoint("out_gpt", "gpt2ish.lmp") == Path("out_gpt/gpt2ish.lmp")
