"""Every command in the docs that names a run's file names it where lmp_trainer writes it.

A pure text test: commands are read from README.md and docs/*.md, the trainer's own paths come
from `RunConfig` (the code that names them), experiment and plan names from the source files.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from pathlib import Path

import pytest

from lmplay.cli.trainer import parse_config
from lmplay.config import DataConfig, ModelConfig, RunConfig
from lmplay.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_START = ("lmp_", "python", "torchrun")
RUN_FILE = re.compile(r"out_gpt/[\w./<>-]+\.(?:lmp|stats\.jsonl?)\b|[\w./-]+\.stats\.json\b")
# What a run writes beside its checkpoint: stage, best, last-good and rolling step checkpoints.
# What RunFiles names beside a checkpoint STEM.lmp: its stats and its copies.
VARIANT = re.compile(
    r"^(?P<stem>[\w-]+)(?:\.best|\.last-good|\.step\d{8}|\.stage-[\w.+%-]+)?\.lmp$"
    r"|^(?P<stats>[\w-]+)\.stats\.jsonl$"
)


def experiments() -> set[str]:
    names = set()
    for path in (REPO / "lmplay" / "models").glob("*.py"):
        names.update(re.findall(r'@register\(\s*"(\w+)"', path.read_text(encoding="utf-8")))
    return names


def plans() -> set[str]:
    return {p.stem for p in (REPO / "lmplay" / "plan" / "builtin").glob("*.json")}


def commands(text: str) -> list[str]:
    """Lines of fenced code blocks that run a command, and inline code spans that do."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            found.extend(part.strip() for part in line.split("&&"))
    found += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)
    return [c for c in found if c.startswith(COMMAND_START)]


def trainer_flags(command: str) -> list[str] | None:
    words = shlex.split(command, comments=True)
    if words and words[0] == "lmp_trainer":
        return words[1:]
    if "lmplay.cli.trainer" in words:
        return words[words.index("lmplay.cli.trainer") + 1 :]
    return None


@functools.cache
def written_by_docs() -> frozenset[str]:
    """The checkpoint and stats paths of every lmp_trainer command in the docs."""
    paths = set()
    for doc in DOCS:
        for command in commands(doc.read_text(encoding="utf-8")):
            flags = trainer_flags(command)
            if flags is None or any(w in flags for w in ("--help", "list", "...")):
                continue  # no run, or a sketch of flags rather than a command
            with contextlib.redirect_stderr(io.StringIO()):
                try:
                    cfg = parse_config(flags)
                except (SystemExit, UsageError):
                    continue  # a flag from a placeholder (FILE, N): no run to name
            paths.update({str(cfg.model_path()), str(cfg.stats_path())})
    return frozenset(paths)


def default_paths() -> set[str]:
    """`out_gpt/PLAN/EXP.lmp` and its stats for every built-in plan and registered experiment."""
    paths = set()
    for plan in plans():
        for exp in experiments():
            cfg = RunConfig(model=ModelConfig(exp=exp), data=DataConfig(training_plan=plan))
            paths.update({str(cfg.model_path()), str(cfg.stats_path())})
    return paths


def problem(path: str, known: set[str]) -> str | None:
    if path.endswith(".stats.json"):
        return "lmp_trainer writes OUT_DIR/<model>.stats.jsonl"
    parts = path.split("/")
    if len(parts) < 3:
        return "runs live in out_gpt/PLAN/ (OUT_DIR defaults to out_gpt/<plan name>)"
    if any(re.fullmatch(r"[A-Z_<>a-z]*[A-Z<>][A-Z_<>]*", p.split(".")[0]) for p in parts[1:]):
        return None  # a placeholder (out_gpt/PLAN/EXP.lmp): its shape is all there is to check
    match = VARIANT.match(parts[-1])
    if match is None:
        return "not a file name lmp_trainer writes"
    base = "/".join([*parts[:-1], match["stem"] or match["stats"]])
    if path in known or f"{base}.lmp" in known:
        return None
    return "written by no lmp_trainer command in the docs and not OUT_DIR/EXP.lmp of any plan"


def test_the_checker_refuses_stale_paths() -> None:
    known = {"out_gpt/tiny/gpt2ish.lmp"}
    assert problem("out_gpt/gpt2ish.lmp", known) is not None
    assert problem("out_gpt/tiny/gpt2ish.stats.json", known) is not None
    assert problem("out_gpt/tiny/nonesuch.lmp", known) is not None
    assert problem("out_gpt/tiny/gpt2ish.shakespeare.lmp", known) is not None  # old stage name
    assert problem("out_gpt/tiny/gpt2ish.stage-shakespeare.lmp", known) is None
    assert problem("out_gpt/tiny/gpt2ish.best.lmp", known) is None
    assert problem("out_gpt/tiny/gpt2ish.stats.jsonl", known) is None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_commands_in_the_docs_name_paths_the_code_writes(doc: Path) -> None:
    known = written_by_docs() | default_paths()
    found = [
        (command, path)
        for command in commands(doc.read_text(encoding="utf-8"))
        for path in RUN_FILE.findall(command)
    ]
    assert found or doc.name != "README.md"  # the scan sees the README's commands
    wrong = [f"{path} ({why}) in: {command}" for command, path in found
             if (why := problem(path, known)) is not None]  # fmt: skip
    assert not wrong, "\n".join(wrong)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of `page` (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address: not checked offline
        path, _, anchor = target.partition("#")
        page = (doc.parent / path).resolve() if path else doc
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and page.suffix == ".md" and anchor not in anchors(page):
            broken.append(f"{target}: no heading with that anchor in {page.name}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_in_the_docs_resolve(doc: Path) -> None:
    assert not broken_links(doc), "\n".join(broken_links(doc))
