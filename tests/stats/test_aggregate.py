"""Seed groups: membership, mean curves and bands, final-loss table, Welch's t-test, tidy CSV.

Every expected number below is worked out by hand from the constructed stats files.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from lmplay.cli.plotstats import main
from lmplay.errors import UsageError
from lmplay.stats.aggregate import find_group, group_band, group_runs
from lmplay.stats.compare import (
    compare_groups,
    final_losses,
    regularized_incomplete_beta,
    welch_t_test,
)
from lmplay.stats.plot import PlotOptions, group_figures, plot_runs
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import RunStats, load_stats
from lmplay.stats.summary import write_summary

META = {"plan": "demo", "batch_size": 8, "lr": 0.003, "model_args": {"embed_dim": 32}}


def write_run(
    folder: Path, exp: str, seed: int, losses: list[float], *, meta: dict | None = None
) -> Path:
    """Validation on set "a" at samples 8, 16, ... with the given losses; tokens vary by seed."""
    path = folder / f"{exp}-{seed}" / f"{exp}.stats.json"
    rec = StatsRecorder(
        path, run=f"{exp}-{seed}", exp=exp, model=f"{exp}.lmp", meta={**META, **(meta or {}),
                                                                       "seed": seed}
    )  # fmt: skip
    rec.add_validation("a", {"samples": 0, "tokens": 0, "loss": 11.0})  # step 0
    for i, loss in enumerate(losses, start=1):
        record = {"samples": 8 * i, "tokens": 100 * i + 10 * seed, "steps": i, "loss": loss}
        rec.add_train({**record, "accuracy": 0.1 * i})
        rec.add_validation("a", record)
    rec.flush()
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[RunStats]:
    paths = [
        write_run(tmp_path, "gpt2ish", 0, [6.0, 4.0]),
        write_run(tmp_path, "gpt2ish", 1, [5.0, 5.0]),
        write_run(tmp_path, "gpt2ish", 2, [7.0, 3.0, 1.0]),  # a third point only this seed has
        write_run(tmp_path, "modern", 0, [5.0, 2.0]),
        write_run(tmp_path, "modern", 1, [4.0, 3.0]),
    ]
    return [load_stats(p) for p in paths]


def test_runs_differing_only_by_seed_share_a_group(tmp_path: Path, runs) -> None:
    other_lr = load_stats(write_run(tmp_path / "lr", "modern", 0, [1.0], meta={"lr": 0.01}))
    groups = group_runs([*runs, other_lr])
    labels = [g.label for g in groups]
    assert labels == ["exp=gpt2ish,lr=0.003", "exp=modern,lr=0.003", "exp=modern,lr=0.01"]
    assert [g.seeds for g in groups] == [[0, 1, 2], [0, 1], [0]]
    assert group_runs(runs[:2])[0].label == "gpt2ish"  # nothing differs: named by exp
    assert find_group(groups, "0.01").label == "exp=modern,lr=0.01"
    with pytest.raises(UsageError, match="ambiguous group 'modern'"):
        find_group(groups, "modern")


def test_mean_curve_carries_each_run_to_the_groups_end(runs) -> None:
    gpt2ish = group_runs(runs)[0]
    band = group_band(gpt2ish, "a", "loss", "std")
    assert band is not None and band.n == 3
    assert band.samples.tolist() == [0, 8, 16, 24]  # step 0 too; 24 only seed 2 reached
    # mean tokens of the runs that reached each point: 0; 100/110/120; 200/...; seed 2's 320
    assert band.tokens.tolist() == pytest.approx([0, 110, 210, 320])
    # seeds 0 and 1 end at 16 samples and hold their last losses (4, 5) past it
    assert band.mean.tolist() == pytest.approx([11.0, 6.0, 4.0, 10 / 3])
    assert band.ends == (2,)  # where a seed's records end before the group's
    # sample std (n - 1): 0 at step 0; (6, 5, 7) -> 1; (4, 5, 3) -> 1; (4, 5, 1) -> sqrt(13/3)
    spread = [0.0, 1.0, 1.0, math.sqrt(13 / 3)]
    assert band.low.tolist() == pytest.approx([m - d for m, d in zip(band.mean, spread)])
    assert band.high.tolist() == pytest.approx([m + d for m, d in zip(band.mean, spread)])
    minmax = group_band(gpt2ish, "a", "loss", "minmax")
    assert minmax.low.tolist() == [11.0, 5.0, 3.0, 1.0]
    assert minmax.high.tolist() == [11.0, 7.0, 5.0, 5.0]
    train = group_band(gpt2ish, None, "accuracy", "std", window=2)
    # trailing mean of 2 records per run: (0.1, 0.15) for every seed, seed 2 then 0.25
    assert train.mean.tolist() == pytest.approx([0.1, 0.15, (0.15 + 0.15 + 0.25) / 3])
    assert train.high[:2].tolist() == pytest.approx(train.low[:2].tolist())
    assert group_band(gpt2ish, "a", "word_accuracy") is None


def test_final_losses_and_welch_test(runs) -> None:
    groups = group_runs(runs)
    table = final_losses(groups)
    by_group = {f.group: f for f in table}
    gpt2ish, modern = by_group["exp=gpt2ish"], by_group["exp=modern"]
    assert gpt2ish.values == (4.0, 5.0, 1.0) and gpt2ish.n == 3  # each run's last record
    assert gpt2ish.mean == pytest.approx(10 / 3)
    assert gpt2ish.std == pytest.approx(math.sqrt(((2 / 3) ** 2 + (5 / 3) ** 2 + (7 / 3) ** 2) / 2))
    assert modern.mean == 2.5 and modern.std == pytest.approx(math.sqrt(0.5))
    (result,) = compare_groups(table, groups[0], groups[1])
    # by hand: v1 = 13/3 (q1 = 13/9), v2 = 1/2 (q2 = 1/4);
    q1, q2 = 13 / 9, 1 / 4
    t = (10 / 3 - 2.5) / math.sqrt(q1 + q2)
    df = (q1 + q2) ** 2 / (q1**2 / 2 + q2**2 / 1)
    assert result.t == pytest.approx(t) and result.t == pytest.approx(0.640184, abs=1e-6)
    assert result.df == pytest.approx(df) and result.df == pytest.approx(2.596650, abs=1e-6)
    # Two-sided p = 1 - 2 * (integral of Student's t density from 0 to t), by the trapezoid rule.
    x = np.linspace(0.0, t, 200_001)
    density = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = density * (1 + x**2 / df) ** (-(df + 1) / 2)
    integral = float(np.sum((pdf[1:] + pdf[:-1]) / 2) * (x[1] - x[0]))
    assert result.p == pytest.approx(1 - 2 * integral, abs=1e-9)


def test_welch_p_values_equal_closed_forms() -> None:
    # Equal n = 2 and equal variances give df = 2, where the two-sided p is 1 - |t|/sqrt(t²+2).
    t, df, p = welch_t_test([4.0, 5.0], [2.0, 3.0])
    assert t == pytest.approx(2 * math.sqrt(2)) and df == pytest.approx(2.0)
    assert p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)
    assert p == pytest.approx(0.1055728, abs=1e-7)
    # I_x(1/2, 1/2) = (2/π) asin(sqrt(x)) (the df = 1 case); I_x(a, 1) = x^a; I_x(1, b) = 1-(1-x)^b
    for x in (0.01, 0.3, 0.5, 0.77, 0.999):
        assert regularized_incomplete_beta(0.5, 0.5, x) == pytest.approx(
            2 / math.pi * math.asin(math.sqrt(x)), rel=1e-12
        )
        assert regularized_incomplete_beta(3.5, 1.0, x) == pytest.approx(x**3.5, rel=1e-12)
        assert regularized_incomplete_beta(1.0, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5)
    with pytest.raises(ValueError, match="2 values per group"):
        welch_t_test([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="zero variance"):
        welch_t_test([1.0, 1.0], [2.0, 2.0])


def test_plotstats_writes_summary_group_plots_and_tidy_csv(tmp_path: Path, runs, capsys) -> None:
    out = tmp_path / "plots"
    code = main([str(tmp_path), "--out-dir", str(out), "--compare", "gpt2ish", "modern", "--csv",
                 "--band", "minmax"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "exp=gpt2ish  a               3.3333 ± 2.0817          3" in printed
    assert (
        "Welch's t-test on a: A=exp=gpt2ish vs B=exp=modern: difference A - B +0.8333 "
        "(exp=modern is lower)"
    ) in printed
    assert (out / "groups_loss.png").stat().st_size > 0
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["welch"][0]["t"] == pytest.approx(0.640184, abs=1e-6)
    assert [g["seeds"] for g in summary["groups"]] == [[0, 1, 2], [0, 1]]
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["group"], r["n"], float(r["mean"])) for r in rows] == [
        ("exp=gpt2ish", "3", pytest.approx(10 / 3)),
        ("exp=modern", "2", 2.5),
    ]
    with open(out / "records.csv", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    # 5 runs: 2 + 2 + 3 + 2 + 2 = 11 train records, as many validation records plus 5 at 0
    assert len(records) == 11 + 11 + 5
    first = records[0]
    assert list(first)[:8] == ["run", "group", "seed", "split", "set", "samples", "tokens", "steps"]
    assert list(first)[8:] == ["stage", "accuracy", "loss"]
    val = [r for r in records if r["run"] == "gpt2ish-2" and r["split"] == "validation"]
    assert [(r["set"], r["samples"], r["loss"]) for r in val][-1] == ("a", "24", "1.0")
    assert np.isclose(float(val[1]["tokens"]), 120)


def test_compare_unknown_group_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, runs, capsys
) -> None:
    out = tmp_path / "plots"
    assert main([str(tmp_path), "--out-dir", str(out), "--compare", "gpt2ish", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --compare: unknown group 'nope'; groups: exp=gpt2ish; exp=modern"]
    assert not out.exists()


def test_group_figure_ends_at_the_tables_values_with_step_0_shown(tmp_path: Path, runs) -> None:
    groups = group_runs(runs)
    table = final_losses(groups)
    write_summary(tmp_path, groups, table)
    with open(tmp_path / "summary.csv", encoding="utf-8") as f:
        summary = {row["group"]: float(row["mean"]) for row in csv.DictReader(f)}
    figures = dict(group_figures(groups, PlotOptions()))
    axes = figures["groups_loss"].ax
    drawn = {line.get_label(): line for line in axes.lines if not line.get_label().startswith("_")}
    assert len(drawn) == len(summary) == 2
    for label, line in drawn.items():
        group = label.split(" (n=")[0]
        assert line.get_ydata()[-1] == pytest.approx(summary[group], rel=1e-12)
        assert label.endswith(f": {summary[group]:.4g}")  # the legend states the table's value
        assert line.get_xdata()[0] == 0  # step 0 is on the plot
    figures["groups_loss"].save(tmp_path / "groups_loss.png", "png")
    assert axes.get_xscale() == "symlog"
    (ends,) = [line for line in axes.lines if line.get_label() == "_seed ends"]
    assert ends.get_ydata().tolist() == [4.0]  # gpt2ish: seeds 0 and 1 end at its mean of 4


def test_a_constant_metric_is_stated_not_drawn(tmp_path: Path) -> None:
    path = write_run(tmp_path, "gpt2ish", 0, [6.0, 4.0])
    run = load_stats(path)
    for record in run.validation["a"]:
        record["word_accuracy"] = 0.0
    plot_runs([run], tmp_path / "plots", PlotOptions())
    manifest = orjson.loads((tmp_path / "plots" / "plots.json").read_bytes())
    word = next(p for p in manifest["plots"] if p["file"] == "word_accuracy.png")
    assert word["series"][0]["constant"] == 0.0
    assert (
        "constant" not in next(p for p in manifest["plots"] if p["file"] == "loss.png")["series"][0]
    )
