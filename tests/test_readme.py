"""The README and the docs are executable: the set-up paths exist and the commands run (tiny size).

Commands in ```bash blocks of README.md and docs/*.md run here; ```sh blocks are shown only
(they need a GPU, the hub, a cluster or an optional package).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, cli_in_process, subprocess_env

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
# The README first: its commands make the runs that the docs pages' commands may read.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MODULES = {
    "lmp_trainer": "lmplay.cli.trainer",
    "lmp_plotstats": "lmplay.cli.plotstats",
    "lmp_generator": "lmplay.cli.generate",
}


def bash_blocks(text: str = README) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def setup_commands() -> list[str]:
    return [line for block in bash_blocks() for line in block.splitlines()
            if line.startswith("python3 -m venv")]  # fmt: skip


def readme_commands() -> list[list[str]]:
    """Every lmp_* invocation in the bash blocks of the README, then of each docs page, in
    order, comments stripped."""
    commands = []
    blocks = [b for page in PAGES for b in bash_blocks(page.read_text(encoding="utf-8"))]
    for block in blocks:
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] in MODULES:
                    commands.append(words)
    return commands


def test_exactly_two_setup_paths_one_trains_one_tests() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    train, test = commands
    for command in commands:
        assert "pip install torch==2.13.0" in command
    assert train.endswith("lmp_trainer && lmp_plotstats")
    assert "'.[dev]'" in test and "python -m pytest -q" in test
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()


def run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command through its installed console script (or `python -m` without one)."""
    script = Path(sys.executable).parent / words[0]
    program = [str(script)] if script.exists() else [sys.executable, "-m", MODULES[words[0]]]
    return subprocess.run([*program, *words[1:]], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def newcomer_folder(folder: Path) -> Path:
    """`folder` with a copy of the shipped plans, as a fresh clone has them: the README's
    commands run there, never in the working tree, whose `out_gpt/` may hold the user's runs."""
    shutil.copytree(REPO / "plans", folder / "plans", symlinks=False)
    return folder


@pytest.mark.slow
def test_readme_commands_run_at_tiny_size(tmp_path: Path) -> None:
    commands = readme_commands()
    assert ["lmp_trainer"] in commands and ["lmp_plotstats"] in commands
    folder = newcomer_folder(tmp_path)
    listing = run(["lmp_trainer", "--exp", "list"], cwd=folder)  # the installed entry point
    assert listing.returncode == 0 and "gpt2ish_124m" in listing.stdout, listing.stderr[-2000:]
    for words in commands:
        if "plans/wiki.json" in words:
            # Needs the hub: here it must fail fast with the way to use local files.
            result = cli_in_process(MODULES[words[0]].rsplit(".", 1)[1], words[1:], folder)
            code, err = result.returncode, result.stderr
            assert code == 2, err[-2000:]
            assert "wikimedia/wikipedia" in err and "files" in err
            continue
        if words[0] == "lmp_trainer" and "list" not in words:
            words = [*words, *TINY_FLAGS, "--max-steps", "2", "--validation-interval", "8"]
        if words[0] == "lmp_generator":
            words = [*words, "--max-new-tokens", "5"]
        result = cli_in_process(MODULES[words[0]].rsplit(".", 1)[1], words[1:], folder)
        code, err = result.returncode, result.stderr
        assert code == 0, f"{shlex.join(words)}\n{err[-3000:]}"
    out = folder / "out_gpt"
    assert (out / "tiny" / "gpt2ish.lmp").is_file()
    assert (out / "tiny" / "gpt2ish.stats.jsonl").is_file()
    assert (out / "tiny" / "modern.lmp").is_file()
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    # The docs pages' commands ran too: the comparison of architectures and the stop-rule run.
    assert (out / "compare" / "modern.lmp").is_file()
    assert (out / "compare" / "plots" / "loss.png").is_file()
    assert (out / "rules" / "gpt2ish.lmp").is_file()
