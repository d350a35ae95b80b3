"""Options that parse but cannot work, and flags that contradict each other: one line, exit 2."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lmplay.cli import plotstats, trainer
from lmplay.stats.recorder import StatsRecorder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "1e30"], "--lr 1e+30 is too large; use a rate in (0, 10]"),
        (["--lr", "nan"], "--lr nan must be a finite number >= 0"),
        (
            ["--min-lr", "0.1", "--lr-schedule", "cosine", "--max-steps", "9"],
            "--min-lr 0.1 exceeds",
        ),
        (["--min-lr", "1e-4"], "--min-lr applies to --lr-schedule cosine or linear, not constant"),
        (["--decay-steps", "5"], "--decay-steps applies to --lr-schedule cosine or linear"),
        (["--lr-schedule", "cosine"], "--lr-schedule cosine needs --decay-steps or --max-steps"),
        (["--allow-changed", "colour"], "--allow-changed colour: not a setting a resume compares"),
        (["--weight-decay", "2000"], "each adamw step would zero or flip every weight"),
        (["--optimizer-warmup-fraction", "nan"], "--optimizer-warmup-fraction nan must be in"),
        (["--dropout", "nan"], "--dropout nan must be in [0, 1)"),
        (["--grad-clip", "inf"], "--grad-clip inf must be a finite number >= 0"),
        (["--seed", "-1"], "--seed -1 must be an integer in [0, 2**63 - 1]"),
        (["--seed", str(2**70)], "must be an integer in [0, 2**63 - 1]"),
        (["--amp-dtype", "fp16"], "--amp-dtype fp16 needs --amp"),
        (["--compile-mode", "max-autotune"], "--compile-mode max-autotune needs --compile-model"),
        (["--run-name", " "], "--run-name is empty"),
        (["--model", ""], "--model is empty"),
    ],
)
def test_trainer_refuses_values_that_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    args: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert trainer.main([*args, "--out-dir", "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def _stats(folder: Path) -> Path:
    recorder = StatsRecorder(
        folder / "a.stats.json", run="a", exp="gpt2ish", model="a.lmp", meta={}
    )
    for i in range(1, 4):
        recorder.add_validation("v", {"samples": i, "tokens": 10 * i, "loss": 1 / i})
    recorder.flush()
    return folder


def test_plotstats_out_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = _stats(tmp_path)
    (tmp_path / "taken").write_text("a file")
    assert plotstats.main([str(runs), "--out-dir", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out-dir {tmp_path / 'taken'}: is a file, not a folder\n"


def test_plotstats_read_only_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    runs = _stats(tmp_path)
    real_open = open

    def read_only_fs(path, mode="r", *args, **kwargs):
        # Root ignores permission bits, so the file system's refusal is simulated.
        if "x" in mode or ("w" in mode and str(path).startswith(str(tmp_path))):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_fs)
    assert plotstats.main([str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write there (Read-only file system)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.stats.json"]
