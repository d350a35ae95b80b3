"""Stateful adapters for the parts of a run that do not own a `state_dict` in lmplay's terms.

The model and optimizer have torch's own `state_dict`, but loading them must fail with one clear
line, not a torch traceback; the RNGs and the LR schedule position have no object at all. Each
adapter here gives them the `Stateful` shape the checkpoint map walks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmplay.state import capture_rng_state, restore_rng_state


class ModelState:
    """A model's weights; loading refuses missing, unexpected and misshapen tensors by name."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"weights must be a dict of tensors, got {type(state).__name__}")
        expected = self.model.state_dict()
        missing = [key for key in expected if key not in state]
        unexpected = [key for key in state if key not in expected]
        if missing or unexpected:
            raise ValueError(
                f"{len(missing)} missing tensors {missing[:4]}, "
                f"{len(unexpected)} unexpected tensors {unexpected[:4]}"
            )
        for key, tensor in state.items():
            want = expected[key]
            if not isinstance(tensor, torch.Tensor) or tensor.shape != want.shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
                raise ValueError(
                    f"tensor {key} has shape {got}, the model needs {tuple(want.shape)}"
                )
        self._apply(state)

    def _apply(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)


class OptimizerState:
    """Optimizer moments; torch's own checks (group sizes) plus the shape of every moment."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # Every parameter the optimizer has stepped holds the same moments (a parameter that
        # never had a gradient holds none, and starts fresh as torch does).
        kinds = {frozenset(moments) for moments in state["state"].values() if moments}
        if len(kinds) > 1:
            smallest = min(kinds, key=len)
            missing = sorted(max(kinds, key=len) - smallest)
            raise ValueError(f"some parameters lack the moments {missing}")
        for index, moments in state["state"].items():
            param = params[int(index)]
            for name, value in moments.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"moment '{name}' of parameter {index} has shape {tuple(value.shape)}, "
                        f"the parameter {tuple(param.shape)}"
                    )
        self._apply(state)

    def _apply(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class RngState:
    """Python, NumPy, torch (and CUDA) generators, captured at save and restored at load."""

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_rng_state(state)


class StepState:
    """The LR schedule's position: the optimizer step, which the runner also counts, and the
    step the optimizer's warmup began at.

    The schedule is a pure function of the step, so loading only checks that the stored step
    agrees with the runner's (the runner loads first): a checkpoint whose pieces disagree is
    malformed. With `restart_warmup` (a fresh optimizer on trained weights) the warmup begins
    again at the loaded step instead of where the checkpoint's began.
    """

    def __init__(self, step: Callable[[], int], restart_warmup: bool = False) -> None:
        self._step = step
        self._restart_warmup = restart_warmup
        self.warmup_from = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step(), "warmup_from": self.warmup_from}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stored = state["step"]
        if not isinstance(stored, int) or stored != self._step():
            raise ValueError(
                f"schedule step {stored!r} disagrees with the run's step {self._step()}"
            )
        warmup_from = state.get("warmup_from", 0)  # absent before --ignore-optimizer warmed up
        if not isinstance(warmup_from, int) or not 0 <= warmup_from <= stored:
            raise ValueError(f"schedule warmup_from {warmup_from!r} is not a step up to {stored}")
        self.warmup_from = stored if self._restart_warmup else warmup_from
