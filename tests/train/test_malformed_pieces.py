"""Malformed pieces inside a checkpoint's components: one line naming the component, exit 2,
whether the file is resumed (--model) or started from (--initial-model)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli.trainer import main

ARGS = ["--training-plan", "plan.json", *TINY_FLAGS, "--max-steps", "2"]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("good")
    one_stage_plan(folder, documents=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main([*ARGS, "--max-steps", "1", "--model", "good.lmp"]) == 0
    return folder, torch.load(folder / "good.lmp", weights_only=True)


def _batcher(c: dict) -> dict:
    return c["plan"]["state"]["batcher"]


MUTATIONS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "batcher without epoch": ("plan", lambda c: _batcher(c).pop("epoch")),
    "batcher position a string": ("plan", lambda c: _batcher(c).__setitem__("position", "x")),
    "batcher counters missing": ("plan", lambda c: _batcher(c).pop("counters")),
    "batcher not a dict": ("plan", lambda c: c["plan"]["state"].__setitem__("batcher", "x")),
    "stage index a string": ("plan", lambda c: c["plan"]["state"].__setitem__("stage_index", "1")),
    "completed a string": ("plan", lambda c: c["plan"]["state"].__setitem__("completed", "ab")),
    "runner tokens a string": ("runner", lambda c: c["runner"]["state"].__setitem__("tokens", "x")),
    "moment missing": ("optimizer", lambda c: c["optimizer"]["state"]["state"][0].pop("exp_avg")),
}


STARTS = [(case, "--model") for case in MUTATIONS]
# A run from --initial-model reads its weights, and its moments when asked to (no progress).
STARTS += [("moment missing", "--initial-model")]


@pytest.mark.parametrize(("case", "start"), STARTS)
def test_malformed_piece_is_one_line_naming_the_component(
    good: tuple[Path, dict], tmp_path: Path, monkeypatch, capsys, case: str, start: str
) -> None:
    folder, payload = good
    component, mutate = MUTATIONS[case]
    bad = copy.deepcopy(payload)
    mutate(bad["components"])
    torch.save(bad, tmp_path / "bad.lmp")
    before = (tmp_path / "bad.lmp").read_bytes()
    monkeypatch.chdir(folder)
    where = ["--model", str(tmp_path / "bad.lmp")]
    if start == "--initial-model":
        where = ["--model", str(tmp_path / "new.lmp"), "--initial-model", str(tmp_path / "bad.lmp")]
        where.append("--initial-model-optimizer")
    capsys.readouterr()
    assert main([*ARGS, *where]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1
    assert f"component '{component}' does not fit this run" in errors[0]
    assert (tmp_path / "bad.lmp").read_bytes() == before
    assert not (tmp_path / "new.lmp").exists()
