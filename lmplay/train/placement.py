"""Where and how a run computes: its device, its place among the ranks, its precision.

`lmp_trainer` resolves one Placement from `--device`, `--amp`/`--amp-dtype` and torchrun's
environment before anything is built, and hands it down: the model is moved to its device, the
step and validation run under its precision, the ranks of its world share each batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from lmplay.config import SystemConfig
from lmplay.errors import UsageError
from lmplay.train.distributed.world import SINGLE, World
from lmplay.train.preflight import check_device


@dataclass
class Precision:
    """How forward passes run: autocast dtype (None = full precision) and the grad scaler."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).split(".")[-1]


@dataclass(frozen=True)
class Placement:
    """This process's device, its rank among the ranks (`world`), and its precision."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    world: World = SINGLE
    precision: Precision = field(default_factory=Precision)

    @classmethod
    def on(cls, device: torch.device | str) -> Placement:
        """One process in full precision on `device` (scoring, tests)."""
        device = torch.device(device)
        return cls(device, SINGLE, Precision(device.type))


def resolve_placement(system: SystemConfig, world: World = SINGLE) -> Placement:
    """The placement `--device` and `--amp` ask for: `auto` picks CUDA, then MPS, then the CPU;
    `cuda` under torchrun means this rank's GPU; `--amp` picks bf16 where the device has it."""
    device = world.local_device(resolve_device(system.device))
    return Placement(device, world, resolve_precision(system, device))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return check_device(name)


def resolve_precision(system: SystemConfig, device: torch.device) -> Precision:
    if not system.amp:
        return Precision(device.type)
    wanted = system.amp_dtype
    if device.type == "cuda" and wanted == "auto":
        wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted == "fp16":
        if device.type not in ("cuda", "cpu"):
            raise UsageError(f"--amp-dtype fp16 runs on cuda or cpu, not {device.type}")
        return Precision(device.type, torch.float16, torch.amp.GradScaler(device.type))
    return Precision(device.type, torch.bfloat16)
