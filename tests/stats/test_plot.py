import math
from pathlib import Path

import orjson
import pytest

from lmplay.errors import UsageError
from lmplay.stats.plot import PlotOptions, plot_runs, select_runs
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import RunStats, load_stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(path: Path, run: str, points: int, *, speed: float = 1.0, val_every: int = 5) -> Path:
    rec = StatsRecorder(path, run=run, exp="gpt2ish", model=f"{run}.lmp", meta={})
    for i in range(1, points + 1):
        tokens = 1000 * i
        loss = 10.0 / (1.0 + speed * math.log(tokens)) + 0.1 * math.sin(i)
        rec.add_train({"samples": 4 * i, "tokens": tokens, "loss": loss, "accuracy": 1 / loss})
        if i % val_every == 0:
            rec.add_validation("shakespeare", {"samples": 4 * i, "tokens": tokens, "loss": loss})
    rec.flush()
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> list[RunStats]:
    return [
        load_stats(write_run(tmp_path / "runs" / "a.stats.json", "alpha", 60)),
        load_stats(write_run(tmp_path / "runs" / "b.stats.json", "beta", 40, speed=1.3)),
    ]


def _manifest(out_dir: Path) -> dict:
    return orjson.loads((out_dir / "plots.json").read_bytes())


def test_plots_two_runs(tmp_path: Path, two_runs: list[RunStats]) -> None:
    out = tmp_path / "plots"
    written = plot_runs(two_runs, out, PlotOptions(plot_train=True, plot_raw=True))
    names = sorted(p.name for p in written)
    # validation records carry no accuracy, so there is no validation accuracy plot
    assert names == [
        "loss.png",
        "loss_diff.png",
        "plots.json",
        "train_accuracy.png",
        "train_accuracy_diff.png",
        "train_loss.png",
        "train_loss_diff.png",
    ]
    for path in written:
        assert path.parent == out and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC

    manifest = _manifest(out)
    assert manifest["target"] == "alpha"  # the run with the most tokens
    assert [r["label"] for r in manifest["runs"]] == ["alpha", "beta"]
    loss = next(p for p in manifest["plots"] if p["file"] == "loss.png")
    assert loss["window"] == 1 and loss["kind"] == "validation"
    assert [
        (s["run"], s["points"], s["first_tokens"], s["last_tokens"]) for s in loss["series"]
    ] == [
        ("alpha", 12, 5000, 60000),
        ("beta", 8, 5000, 40000),
    ]
    diff = next(p for p in manifest["plots"] if p["file"] == "train_loss_diff.png")
    # beta's diff lives on alpha's grid, only where beta has data
    assert [(s["run"], s["points"], s["last_tokens"]) for s in diff["series"]] == [
        ("alpha", 60, 60000),
        ("beta", 40, 40000),
    ]


def test_replot_is_byte_identical(tmp_path: Path, two_runs: list[RunStats]) -> None:
    options = PlotOptions(plot_train=True, plot_raw=True)
    first = plot_runs(two_runs, tmp_path / "one", options)
    second = plot_runs(two_runs, tmp_path / "two", options)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_svg_output_is_byte_identical(tmp_path: Path, two_runs: list[RunStats]) -> None:
    options = PlotOptions(out_type="svg")
    first = plot_runs(two_runs, tmp_path / "one", options)
    second = plot_runs(two_runs, tmp_path / "two", options)
    assert first[0].suffix == ".svg"
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))


def test_runs_without_validation_plot_train(tmp_path: Path) -> None:
    run = load_stats(write_run(tmp_path / "a.stats.json", "alpha", 3, val_every=100))
    written = plot_runs([run], tmp_path, PlotOptions())
    assert {p.name for p in written} >= {"train_loss.png", "train_loss_diff.png"}


def test_explicit_target_and_unknown_target(tmp_path: Path, two_runs: list[RunStats]) -> None:
    plot_runs(two_runs, tmp_path, PlotOptions(target="beta"))
    assert _manifest(tmp_path)["target"] == "beta"
    with pytest.raises(UsageError, match="unknown --target 'gamma'; runs: alpha, beta"):
        plot_runs(two_runs, tmp_path, PlotOptions(target="gamma"))


def test_min_tokens_and_max_files_select_runs(tmp_path: Path) -> None:
    runs = [
        load_stats(write_run(tmp_path / f"{name}.stats.json", name, n))
        for name, n in [("a", 10), ("b", 30), ("c", 20)]
    ]
    labels = lambda sel: [label for label, _ in sel[0]]  # noqa: E731
    assert labels(select_runs(runs, PlotOptions(min_tokens=15_000))) == ["b", "c"]
    assert labels(select_runs(runs, PlotOptions(max_files=2))) == ["b", "c"]
    assert labels(select_runs(runs, PlotOptions(max_files=2, target="a"))) == ["a", "b"]
    assert select_runs(runs, PlotOptions(min_tokens=25_000, target="a"))[1] == "a"
    with pytest.raises(UsageError, match="the most is 30000"):
        select_runs(runs, PlotOptions(min_tokens=10**9))


def test_clashing_run_names_get_their_folder(tmp_path: Path) -> None:
    runs = [load_stats(write_run(tmp_path / d / "m.stats.json", "same", 5)) for d in ("x", "y")]
    selected, target = select_runs(runs, PlotOptions())
    assert [label for label, _ in selected] == ["same (x)", "same (y)"]
    assert target == "same (x)"  # equal tokens: the first label wins, deterministically
    with pytest.raises(UsageError, match="ambiguous"):
        select_runs(runs, PlotOptions(target="same"))
    assert select_runs(runs, PlotOptions(target="same (y)"))[1] == "same (y)"


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="average-count"):
        PlotOptions(average_count=0)
    with pytest.raises(UsageError, match="output type"):
        PlotOptions(out_type="jpg")
