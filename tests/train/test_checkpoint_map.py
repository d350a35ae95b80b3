"""The one component map: everything saved is restored, malformed pieces are refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from lmp_testing import tiny_run_config

from lmplay.config import RunIOConfig, SystemConfig
from lmplay.errors import CheckpointError
from lmplay.train.checkpoint import load_checkpoint, save_checkpoint
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer


def trained(tmp_path: Path, steps: int = 2, **sections: Any) -> Path:
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=steps)
    cfg = tiny_run_config(tmp_path, **{"io": io, **sections})
    Trainer(build_session(cfg)).fit()
    return cfg.model_path()


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("two_steps")
    trained(folder)
    return folder


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A private copy of a trained run's folder (plan, data, checkpoint and stats)."""
    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    return tmp_path / "out" / "gpt2ish.lmp"


def resumed(tmp_path: Path, steps: int = 4, **sections: Any):
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=steps)
    return build_session(tiny_run_config(tmp_path, **{"io": io, **sections}))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_every_component_saved_is_restored(two_steps: Path, tmp_path: Path) -> None:
    path = copy_of(two_steps, tmp_path)
    stored = load_checkpoint(path)["components"]
    session = resumed(tmp_path)
    assert list(session.checkpoint_map.entries) == list(stored)
    restored = session.checkpoint_map.components()
    for name, component in stored.items():
        if name == "rng":
            continue  # captured after the resume consumed nothing: compared below
        assert same(restored[name]["state"], component["state"]), name
        if name not in ("runner", "plan", "stats"):  # they hold this invocation's paths
            assert same(restored[name]["state_args"], component["state_args"]), name
    assert torch.equal(torch.get_rng_state(), stored["rng"]["state"]["torch"])


def test_fp16_grad_scaler_is_saved_and_restored(tmp_path: Path) -> None:
    fp16 = SystemConfig(device="cpu", amp=True, amp_dtype="fp16")
    path = trained(tmp_path, steps=3, system=fp16)
    scaler = load_checkpoint(path)["components"]["grad_scaler"]["state"]
    assert scaler["_growth_tracker"] > 0  # progress that a fresh scaler would not have
    session = resumed(tmp_path, system=fp16)
    assert session.placement.precision.scaler is not None
    assert session.placement.precision.scaler.state_dict() == scaler


def test_version_1_checkpoints_resume_under_todays_names(two_steps: Path, tmp_path: Path) -> None:
    path = copy_of(two_steps, tmp_path)
    payload = torch.load(path, weights_only=True)
    old_names = {"optimizer": "optimizers", "lr_schedule": "lr_schedulers", "plan": "curriculum"}
    payload["format_version"] = 1
    payload["components"] = {old_names.get(k, k): v for k, v in payload["components"].items()}
    torch.save(payload, path)
    session = resumed(tmp_path)
    assert session.runner.step == 2 and session.optimizer.state


def corrupt(components: dict[str, Any], name: str) -> None:
    """Damage one component the way a hand-edited or foreign checkpoint would."""
    if name == "optimizer":
        first = next(iter(components["optimizer"]["state"]["state"].values()))
        first["exp_avg"] = torch.zeros(3, 3)
    elif name == "runner":
        del components["runner"]["state"]["samples"]
    elif name == "plan":
        del components["plan"]["state_args"]["plan"]
    elif name == "lr_schedule":
        components["lr_schedule"]["state"]["step"] = 99
    elif name == "stats":
        components["stats"]["state"] = {"version": 1}
    elif name == "model":
        components["model"]["state"]["wte.weight"] = torch.zeros(5, 5)


@pytest.mark.parametrize("name", ["model", "optimizer", "runner", "plan", "lr_schedule", "stats"])
def test_malformed_component_is_one_clear_error_and_the_file_is_kept(
    two_steps: Path, tmp_path: Path, name: str
) -> None:
    path = copy_of(two_steps, tmp_path)
    components = load_checkpoint(path)["components"]
    corrupt(components, name)
    save_checkpoint(path, components)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=f"'{name}'|{name} component") as error:
        resumed(tmp_path)
    assert "\n" not in str(error.value)
    assert path.read_bytes() == before
