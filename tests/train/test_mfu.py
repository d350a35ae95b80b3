"""MFU: the peak table, the formula, and the value in the stats records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmp_testing import tiny_run_config

from lmplay.config import RunIOConfig, SystemConfig
from lmplay.errors import UsageError
from lmplay.models import get_experiment
from lmplay.train.mfu import mfu, peak_flops, table_peak_flops
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer


@pytest.mark.parametrize(
    ("device_name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-40GB", 312),
        ("NVIDIA A10G", 70),
        ("NVIDIA L4", 121),
        ("NVIDIA L40S", 362),
        ("NVIDIA GeForce RTX 4090", 165),
    ],
)
def test_the_most_specific_table_entry_wins(device_name: str, tflops: float) -> None:
    assert table_peak_flops(device_name) == tflops * 1e12


def test_unknown_devices_and_cpus_have_no_peak_unless_given() -> None:
    assert table_peak_flops("Some Future Accelerator") is None
    assert peak_flops(torch.device("cpu")) is None
    assert peak_flops(torch.device("cpu"), override_tflops=2.5) == 2.5e12


def test_mfu_is_model_flops_over_peak() -> None:
    # GPT-2 small at ~6 * 124M FLOPs per token, 500k tokens/s on a 989 TFLOP/s part: ~38%
    assert mfu(6 * 124e6, 500_000, 989e12) == pytest.approx(0.376, abs=1e-3)


def test_bad_peak_tflops_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--peak-tflops -1"):
        tiny_run_config(tmp_path, system=SystemConfig(peak_tflops=-1.0))


def test_train_records_carry_mfu_when_the_peak_is_known(tmp_path: Path) -> None:
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=2, validation_interval=1000)
    cfg = tiny_run_config(tmp_path, io=io, system=SystemConfig(device="cpu", peak_tflops=0.5))
    session = build_session(cfg)
    Trainer(session).fit()
    flops = get_experiment(session.built.exp).flops_per_token(session.model_args)
    records = session.stats.train
    assert len(records) == 2
    for record in records:
        assert record["mfu"] == pytest.approx(flops * record["tokens_per_s"] / 0.5e12)
        assert 0 < record["mfu"] < 1


def test_a_cpu_run_without_a_peak_records_no_mfu(tmp_path: Path) -> None:
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=1, validation_interval=1000)
    session = build_session(tiny_run_config(tmp_path, io=io, system=SystemConfig(device="cpu")))
    Trainer(session).fit()
    (record,) = session.stats.train
    assert "mfu" not in record and record["tokens_per_s"] > 0
