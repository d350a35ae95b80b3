"""A newcomer's sequence: the README's train command, then its test command, in one clone.

The README's two set-up lines also install (a venv, torch, lmplay); CI does exactly that in its
own fresh clone before running this test, so here the commands after the install run: the train
command's `lmp_*` programs (at tiny size, as real processes), then the test command's pytest on
tests whose runs write default `out_gpt/` paths, in a fresh copy of the repository that now
holds a user's `out_gpt/`. The second must pass and leave every file of the first untouched.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS
from test_readme import REPO, setup_commands


def fresh_clone(folder: Path) -> Path:
    """The files a clone has: tracked and not ignored (the working tree's, uncommitted changes
    included), without the working tree's own `out_gpt/` runs or virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() or source.is_symlink():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def after_install(command: str) -> list[list[str]]:
    """The parts of a set-up line after its installs, each as words."""
    parts = [shlex.split(part) for part in command.split("&&")]
    return [words for words in parts if words and words[0] not in ("python3", ".", "pip")]


# A test file whose runs write the default `out_gpt/PLAN/...` paths (the README's own commands
# run in the main suite): what the user's `out_gpt/` must be safe from.
RUNS_IN_DEFAULT_FOLDERS = "tests/train/test_run_folders.py"


@pytest.mark.slow
def test_train_then_test_in_one_clone(tmp_path: Path) -> None:
    train, test = setup_commands()
    clone = fresh_clone(tmp_path / "lmplay")
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    bin_dir = Path(sys.executable).parent
    for words in after_install(train):
        assert words[0] in ("lmp_trainer", "lmp_plotstats"), words
        if words[0] == "lmp_trainer":
            words = [*words, *TINY_FLAGS, "--max-steps", "2", "--validation-interval", "8"]
        program = bin_dir / words[0]
        argv = [str(program)] if program.exists() else [sys.executable, "-m", _module(words[0])]
        done = subprocess.run([*argv, *words[1:]], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    users_runs = snapshot(clone / "out_gpt")
    assert "tiny/gpt2ish.lmp" in users_runs and "loss.png" in users_runs

    (pytest_words,) = after_install(test)
    assignments = [word for word in pytest_words if "=" in word and word[0].isupper()]
    command = pytest_words[len(assignments) :]  # `HF_HUB_OFFLINE=1 python -m pytest -q`
    assert command[:3] == ["python", "-m", "pytest"]
    env.update(assignment.split("=", 1) for assignment in assignments)
    done = subprocess.run(
        [sys.executable, *command[1:], "-p", "no:cacheprovider", RUNS_IN_DEFAULT_FOLDERS],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert snapshot(clone / "out_gpt") == users_runs


def _module(program: str) -> str:
    return {"lmp_trainer": "lmplay.cli.trainer", "lmp_plotstats": "lmplay.cli.plotstats"}[program]
