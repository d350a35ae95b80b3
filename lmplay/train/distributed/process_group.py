"""The process group: created once the flags are valid, dropped after every rank is done, and
the one stop request every rank agrees on."""

from __future__ import annotations

import signal
from typing import Any

import torch

from lmplay.train.distributed.world import World, hold_exit_code


def start(world: World, device: torch.device) -> None:
    """Create the process group of `world` (NCCL for CUDA, gloo otherwise) and make this
    rank's GPU (`device`, as `World.local_device` resolved it) the current one. Does nothing in
    one process."""
    if not world.distributed:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=_device_id(device))


def finish(world: World, exit_code: int = 0, *, wait: bool = True) -> None:
    """Drop the process group, after every rank got here (`wait`): rank 0 has written and
    reported before any rank exits, so torchrun never tears down a rank that is still saving.
    After an error a rank does not wait: the others may never come."""
    hold_exit_code(exit_code)
    if world.distributed and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _device_id(device: torch.device) -> torch.device | None:
    return device if device.type == "cuda" else None


class AgreedStop:
    """A stop request all ranks agree on at step boundaries.

    Ctrl+C or SIGTERM may reach one rank only (`kill` of one process) or all at slightly
    different moments; each rank's StopRequest records it, and `sync()` (called by every rank at
    the same points of the loop) shares it, so all ranks stop after the same step and exit with
    the same code. In one process it reads the StopRequest directly, exactly as before.
    """

    def __init__(self, local: Any, world: World) -> None:
        self._local = local
        self._world = world
        self._agreed: signal.Signals | None = None

    @property
    def signal(self) -> signal.Signals | None:
        return self._local.signal if not self._world.distributed else self._agreed

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        from lmplay.train.signals import exit_code_of

        return exit_code_of(self.signal)

    def sync(self) -> None:
        """A collective in a distributed run: every rank calls it at the same point."""
        if not self._world.distributed or self._agreed is not None:
            return
        local = self._local.signal
        # SIGTERM (15) outranks SIGINT (2) when ranks got different signals: a scheduler's
        # SIGTERM is the one whose exit code it waits for.
        agreed = self._world.max_int(int(local) if local is not None else 0)
        if agreed:
            self._agreed = signal.Signals(agreed)
