"""Checks before work: unusable output folders, devices and sizes are refused before training;
a save that fails later (disk full) ends in one line, exit 3, the previous checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay import atomic
from lmplay.cli.trainer import main
from lmplay.train.trainer import Trainer


@pytest.fixture
def plan_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one error line of a run that must stop before building anything."""

    def no_training(trainer: Trainer) -> int:
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "fit", no_training)
    code = main(["--training-plan", "plan.json", *TINY_FLAGS, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_out_dir_that_is_a_file(plan_dir: Path, capsys, monkeypatch) -> None:
    err = refused(["--out-dir", "plan.json/sub"], capsys, monkeypatch)
    assert "--out-dir plan.json/sub: plan.json is a file, not a folder" in err


def test_model_path_that_is_a_folder(plan_dir: Path, capsys, monkeypatch) -> None:
    (plan_dir / "ckpt.lmp").mkdir()
    err = refused(["--model", "ckpt.lmp"], capsys, monkeypatch)
    assert "--model ckpt.lmp: is a folder" in err


def test_checkpoint_name_too_long_for_the_file_system(plan_dir: Path, capsys, monkeypatch) -> None:
    name = "m" * 240 + ".lmp"  # fits, but its temp file and stage checkpoints do not
    err = refused(["--model", f"out/{name}"], capsys, monkeypatch)
    assert "cannot write there" in err and "too long" in err
    assert not (plan_dir / "out").exists()  # the probe's folder was removed again


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir(plan_dir: Path, capsys, monkeypatch) -> None:
    (plan_dir / "ro").mkdir(mode=0o555)
    err = refused(["--out-dir", "ro"], capsys, monkeypatch)
    assert "--out-dir ro: cannot write there (Permission denied)" in err


def test_unwritable_out_dir_reported_with_the_reason(plan_dir: Path, capsys, monkeypatch) -> None:
    # Root ignores permission bits, so the file system's refusal is simulated at the probe.
    real_open = open

    def read_only_fs(path, mode="r", *args, **kwargs):
        if "x" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_fs)
    err = refused(["--out-dir", "out"], capsys, monkeypatch)
    assert "--out-dir out: cannot write there (Read-only file system)" in err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("mps", "--device mps: torch has no usable mps device here"),
        ("meta", "--device meta: the meta device holds no data"),
        ("xla", "--device xla: torch has no usable xla device here"),
        ("nonsense", "--device 'nonsense' is not a torch device"),
    ],
)
def test_devices_this_machine_does_not_have(
    plan_dir: Path, capsys, monkeypatch, device: str, message: str
) -> None:
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    args = [*TINY_FLAGS, "--device", device]
    code = main(["--training-plan", "plan.json", "--out-dir", "out", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (plan_dir / "out").exists()


def test_sizes_that_cannot_fit_are_refused_before_allocating(
    plan_dir: Path, capsys, monkeypatch
) -> None:
    sizes = ["--num-blocks", "96", "--embed-dim", "16384", "--num-heads", "16"]
    monkeypatch.setattr(torch.nn.Module, "to", lambda *a, **k: pytest.fail("allocated"))
    code = main(["--training-plan", "plan.json", "--out-dir", "out", "--device", "cpu", *sizes])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    # adamw: a float32 weight, gradient and two moments per parameter, 16 bytes
    assert "the model has 310,085,730,304 parameters" in err and "at least 4,620.6 GiB" in err
    assert "GiB available" in err and "choose smaller --num-blocks" in err


def test_disk_full_at_a_later_save_keeps_the_previous_checkpoint(
    plan_dir: Path, capsys, monkeypatch
) -> None:
    args = ["--training-plan", "plan.json", "--out-dir", "out", *TINY_FLAGS]
    assert main([*args, "--max-steps", "2"]) == 0
    model = plan_dir / "out" / "gpt2ish.lmp"
    before = model.read_bytes()
    capsys.readouterr()
    real_fsync = atomic.os.fsync

    def disk_full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".tmp-{os.getpid()}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    code = main([*args, "--max-steps", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("error: ")
    assert "No space left on device" in err[-1] and "training stopped" in err[-1]
    assert model.read_bytes() == before
    assert not [p for p in model.parent.iterdir() if ".tmp-" in p.name]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 48 MiB tmpfs, where the machine lets tests mount one (root with CAP_SYS_ADMIN)."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_really_full_disk_ends_in_the_exit_3_line_with_the_checkpoint_intact(
    plan_dir: Path, small_disk: Path, capsys
) -> None:
    args = ["--training-plan", "plan.json", "--out-dir", str(small_disk), *TINY_FLAGS]
    assert main([*args, "--max-steps", "1"]) == 0
    model = small_disk / "gpt2ish.lmp"
    before = model.read_bytes()
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 256 * 1024))  # leave 256 KiB
    capsys.readouterr()
    code = main([*args, "--max-steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3, err
    assert err[-1].startswith("error: cannot write") and "training stopped" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert model.read_bytes() == before
    assert not [p for p in small_disk.iterdir() if ".tmp-" in p.name]


def test_save_datasets_into_a_folder_it_cannot_write_is_exit_2(
    plan_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("LMP_DATASETS", "plan.json/copies")  # under a file
    code = main(["--training-plan", "plan.json", "--save-datasets"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "$LMP_DATASETS plan.json/copies: plan.json is a file, not a folder" in err


def test_a_folder_where_the_run_writes_a_file_is_exit_2_before_training(
    plan_dir: Path, capsys, monkeypatch
) -> None:
    (plan_dir / "out" / "gpt2ish.stats.jsonl").mkdir(parents=True)
    err = refused(["--out-dir", "out"], capsys, monkeypatch)
    assert "gpt2ish.stats.jsonl is a folder where the run writes a file" in err


def test_a_stage_name_too_long_for_the_file_system_is_exit_2_before_training(
    plan_dir: Path, capsys, monkeypatch
) -> None:
    plan = json.loads((plan_dir / "plan.json").read_text())
    plan["stages"][0]["name"] = "s" * 250
    (plan_dir / "plan.json").write_text(json.dumps(plan))
    err = refused(["--out-dir", "out"], capsys, monkeypatch)
    assert "cannot write there" in err and "too long" in err
