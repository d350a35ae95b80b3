"""Compare architectures end to end: two --exp on one plan and out-dir, then lmp_plotstats."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from lmp_testing import TINY_FLAGS, cli_in_process, one_stage_plan

from lmplay.stats.runs import load_stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPS = ["gpt2ish", "modern"]
STEPS = 3


@pytest.mark.slow
def test_two_architectures_train_and_plot_side_by_side(tmp_path: Path) -> None:
    one_stage_plan(tmp_path, documents=40)
    for exp in EXPS:  # default checkpoint: out/<exp>.lmp, stats: out/<exp>.stats.jsonl
        args = ["--training-plan", "plan.json", "--out-dir", "out", "--exp", exp, *TINY_FLAGS,
                "--max-steps", str(STEPS), "--validation-interval", "8"]  # fmt: skip
        result = cli_in_process("trainer", args, tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out" / f"{exp}.lmp").is_file()
    stats = {exp: load_stats(tmp_path / "out" / f"{exp}.stats.jsonl") for exp in EXPS}
    assert {exp: s.exp for exp, s in stats.items()} == {exp: exp for exp in EXPS}
    # Same plan, same data order: both runs saw the same tokens at every step.
    assert stats["gpt2ish"].tokens == stats["modern"].tokens > 0

    result = cli_in_process("plotstats", ["out", "--out-dir", "plots"], tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = orjson.loads((tmp_path / "plots" / "plots.json").read_bytes())
    assert [(r["label"], r["exp"]) for r in manifest["runs"]] == [(e, e) for e in EXPS]
    files = {plot["file"]: plot for plot in manifest["plots"]}
    assert {"loss.png", "loss_diff.png", "accuracy.png", "accuracy_diff.png"} <= set(files)
    assert sorted(result.stdout.split()) == sorted(
        [f"plots/{name}" for name in files] + ["plots/plots.json"]
    )
    for name, plot in files.items():
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG_MAGIC, name
        assert sorted(s["run"] for s in plot["series"]) == EXPS, name
    for series in files["loss.png"]["series"]:  # every validation record, step 0 included
        records = stats[series["run"]].validation["corpus"]
        assert series["points"] == len(records) > STEPS
        assert series["last_tokens"] == records[-1]["tokens"]
