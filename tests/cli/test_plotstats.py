import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from lmp_testing import cli_in_process

from lmplay.cli.plotstats import main
from lmplay.stats.recorder import StatsRecorder


def _write_run(path: Path, run: str, points: int) -> Path:
    rec = StatsRecorder(path, run=run, exp="gpt2ish", model=f"{run}.lmp", meta={})
    for i in range(1, points + 1):
        record = {"samples": i, "tokens": 500 * i, "loss": 8.0 / i, "accuracy": 0.01 * i}
        rec.add_train(record)
        rec.add_validation("shakespeare", record)
    rec.flush()
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli_in_process("plotstats", list(args), cwd)


def test_no_stats_files_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _cli("empty", "elsewhere", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no *.stats.jsonl or *.stats.json files found in: empty, elsewhere (missing)"
    ]


def test_default_location_is_out_gpt(tmp_path: Path) -> None:
    result = _cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "out_gpt (missing)" in result.stderr


def test_only_a_truncated_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    bad = _write_run(tmp_path / "runs" / "bad.stats.json", "bad", 3)
    bad.write_bytes(bad.read_bytes()[:40])  # inside the header line
    result = _cli("runs", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: runs/bad.stats.json: not valid JSON")


def test_corrupted_file_is_skipped_when_a_good_one_remains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path / "good.stats.jsonl", "good", 4)
    bad = _write_run(tmp_path / "bad.stats.jsonl", "bad", 3)
    lines = bad.read_bytes().split(b"\n")
    bad.write_bytes(b"\n".join([*lines[:2], b'{"kind": "tr', *lines[3:]]))
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"warning: skipped {bad}: line 3 is not valid JSON")
    assert str(tmp_path / "loss.png") in out.splitlines()
    manifest = orjson.loads((tmp_path / "plots.json").read_bytes())
    assert [r["run"] for r in manifest["runs"]] == ["good"]


def test_unknown_target_lists_run_names(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a.stats.json", "alpha", 3)
    _write_run(tmp_path / "runs" / "b.stats.json", "beta", 3)
    result = _cli("runs", "--target", "gamma", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: unknown --target 'gamma'; runs: alpha, beta"]
    assert not (tmp_path / "runs" / "plots.json").exists()


def test_plots_without_importing_torch(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a.stats.json", "alpha", 5)
    _write_run(tmp_path / "runs" / "b.stats.json", "beta", 3)
    code = (
        "import sys\n"
        "from lmplay.cli.plotstats import main\n"
        "rc = main(['runs', '--out-dir', 'plots', '--plot-train'])\n"
        "assert 'matplotlib' in sys.modules\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "torch imported: False"
    assert "plots/loss.png" in lines and "plots/train_loss_diff.png" in lines
    manifest = orjson.loads((tmp_path / "plots" / "plots.json").read_bytes())
    assert [r["run"] for r in manifest["runs"]] == ["alpha", "beta"]


def test_out_dir_defaults_to_first_folder_and_options_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path / "a.stats.json", "alpha", 6)
    _write_run(tmp_path / "b.stats.json", "beta", 2)
    args = [str(tmp_path), "--out-type", "svg", "--average-count", "1", "--min-tokens", "2000"]
    assert main(args) == 0
    assert (tmp_path / "loss.svg").exists() and (tmp_path / "accuracy_diff.svg").exists()
    manifest = orjson.loads((tmp_path / "plots.json").read_bytes())
    assert [r["run"] for r in manifest["runs"]] == ["alpha"]
    assert {p["window"] for p in manifest["plots"]} == {1}
    capsys.readouterr()


def test_bad_option_value_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "a.stats.json", "alpha", 2)
    assert main([str(tmp_path), "--max-files", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-files must be at least 1, got 0\n"


def test_several_bad_files_are_named_on_one_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "empty.stats.json").write_bytes(b"")  # e.g. a disk that filled up
    (runs / "other.stats.json").write_bytes(orjson.dumps({"format": "something-else"}))
    result = _cli("runs", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: runs/empty.stats.json: not valid JSON")
    assert "; runs/other.stats.json: not an lmplay stats file" in line


def test_runs_without_records_say_there_is_nothing_to_plot_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    StatsRecorder(tmp_path / "a.stats.json", run="a", exp="gpt2ish", model="a.lmp", meta={}).flush()
    _write_run(tmp_path / "b.stats.json", "b", 0)
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: nothing to plot yet: runs a, b have no record past 0 tokens\n"
    )
    assert not (tmp_path / "plots.json").exists()


def test_validation_only_at_the_start_plots_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = StatsRecorder(tmp_path / "a.stats.json", run="a", exp="gpt2ish", model="a.lmp", meta={})
    rec.add_validation("shakespeare", {"samples": 0, "tokens": 0, "loss": 10.8})
    for i in range(1, 4):
        rec.add_train({"samples": 16 * i, "tokens": 4000 * i, "loss": 10.0 - i})
    rec.flush()
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / name) for name in ("train_loss.png", "train_loss_diff.png", "plots.json")
    ]


def test_word_accuracy_is_plotted_when_records_hold_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run in ("a", "b"):
        rec = StatsRecorder(tmp_path / f"{run}.stats.json", run=run, exp="x", model="", meta={})
        for i in range(1, 4):
            rec.add_validation("v", {"samples": i, "tokens": 100 * i, "loss": 5.0 / i,
                                     "word_accuracy": 0.1 * i})  # fmt: skip
        rec.flush()
    assert main([str(tmp_path)]) == 0
    names = [Path(line).name for line in capsys.readouterr().out.split()]
    assert names == [  # no record holds token accuracy, so there is no accuracy.png
        "loss.png", "loss_diff.png", "word_accuracy.png", "word_accuracy_diff.png", "plots.json"
    ]  # fmt: skip
    manifest = orjson.loads((tmp_path / "plots.json").read_bytes())
    plot = next(p for p in manifest["plots"] if p["file"] == "word_accuracy.png")
    assert [s["run"] for s in plot["series"]] == ["a", "b"]
