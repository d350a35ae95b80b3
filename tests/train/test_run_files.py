"""One run, one owner: every file a run writes is named by RunFiles from its checkpoint, no
user-chosen name (stage, model) maps onto another run's or lmplay's own files, and two runs in
one folder keep their own histories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, TrainerProcess, write_corpus, write_plan

from lmplay.cli.trainer import main
from lmplay.errors import UsageError
from lmplay.run_files import RunFiles
from lmplay.stats.runs import load_stats

RESERVED = ["best", "last-good", "step00000001", "step00000002", "stats", "lock", "lmp"]
ODD = ["a/b", "../up", "nul\x00byte", "100%", "caf\u00e9", ".", "..", "a b", "x.lmp"]


def _files_of(files: RunFiles, steps: int = 3) -> list[Path]:
    fixed = [files.checkpoint, files.stats, files.lock, files.best, files.last_good]
    return fixed + [files.step(n) for n in range(steps)]


@pytest.mark.parametrize("name", RESERVED + ODD)
def test_no_stage_name_maps_onto_another_file_of_the_run_or_out_of_its_folder(name: str) -> None:
    files = RunFiles(Path("out/gpt2ish.lmp"))
    stage = files.stage(name)
    assert stage not in _files_of(files)
    assert stage.parent == files.folder and "/" not in stage.name and "\x00" not in stage.name
    others = {files.stage(other) for other in RESERVED + ODD if other != name}
    assert stage not in others  # different names, different files


@pytest.mark.parametrize(
    "model",
    ["out/x.best.lmp", "out/x.last-good.lmp", "out/x.step00000001.lmp", "out/x.stage-a.lmp"],
)
def test_a_checkpoint_named_like_another_runs_file_is_refused(model: str) -> None:
    with pytest.raises(UsageError, match="choose another name"):
        RunFiles.for_checkpoint(model)


def test_any_accepted_checkpoint_owns_files_no_other_accepted_checkpoint_has() -> None:
    stems = ["x", "x.v2", "x.stats", "x.lmp", "best", "step1", "x.stage", "x.bestish"]
    owned = {}
    for stem in stems:
        files = RunFiles.for_checkpoint(f"out/{stem}.lmp")
        for path in [*_files_of(files), *(files.stage(n) for n in RESERVED)]:
            assert owned.setdefault(path, stem) == stem, f"{path}: {stem} and {owned[path]}"


def _reserved_stage_plan(folder: Path) -> None:
    write_corpus(folder / "corpus.jsonl", 10)
    datasets = {"corpus": {"files": ["corpus.jsonl"], "validation_fraction": 0.1}}
    stages = [
        {"name": "best", "datasets": ["corpus"], "epochs": 0.5},
        {"name": "step00000003", "datasets": ["corpus"], "epochs": 0.5},
    ]
    write_plan(folder, stages, datasets)


def test_stages_named_like_lmplay_files_keep_their_own_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reserved_stage_plan(tmp_path)
    monkeypatch.chdir(tmp_path)
    flags = ["--keep-best", "--keep-last", "1", "--save-interval", "4", "--validation-samples", "2"]
    assert main(["--training-plan", "plan.json", "--out-dir", "out", *TINY_FLAGS, *flags]) == 0
    files = RunFiles(Path("out/gpt2ish.lmp"))
    for index, name in enumerate(["best", "step00000003"]):
        stored = torch.load(files.stage(name), weights_only=True)["components"]
        assert stored["plan"]["state"]["stage_index"] == index + 1  # the stage's own end
    assert files.best.is_file() and files.step_checkpoints()  # the run's own, beside them
    assert all(path.is_file() for path in files.checkpoints())


def test_two_runs_at_once_with_one_stem_and_one_out_dir_keep_both_histories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reserved_stage_plan(tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["--training-plan", "plan.json", "--out-dir", "shared", *TINY_FLAGS]
    runs = {
        "a/run.lmp": ["--max-steps", "1", "--seed", "1"],
        "b/run.lmp": ["--max-steps", "2", "--seed", "2"],
    }
    (first, first_extra), (second, second_extra) = runs.items()
    # One run in another process, the other in this one while it goes on.
    other = TrainerProcess(tmp_path, [*common, "--model", first, *first_extra])
    assert main([*common, "--model", second, *second_extra]) == 0
    assert other.finish(timeout=240) == 0, other.output
    for model, extra in runs.items():
        stats = load_stats(RunFiles(tmp_path / model).stats)
        assert stats.model == "run.lmp" and stats.meta["seed"] == int(extra[-1])
        assert [r["steps"] for r in stats.train] == list(range(1, int(extra[1]) + 1))
    assert not (tmp_path / "shared").exists()  # the stats belong to the checkpoint
