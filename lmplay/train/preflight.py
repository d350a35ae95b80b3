"""Checks that run before any work: the device exists, the outputs can be written, the model fits.

Each failure is a UsageError (one `error:` line, exit 2) raised before data is loaded or a tensor
is allocated, instead of a traceback at the first save after training or an allocator that eats
the machine's memory.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmplay.atomic import temp_path
from lmplay.errors import UsageError
from lmplay.run_files import RunFiles

if TYPE_CHECKING:  # torch loads only when a device is checked: the folder checks come first
    import torch

OPTIMIZER_SLOTS = {"adamw": 2, "adam": 2, "adagrad": 1, "sgd": 1, "rmsprop": 1}
"""Tensors of a parameter's size each optimizer keeps per parameter (moments, momentum, sums)."""
BYTES_PER_VALUE = 4  # weights, gradients and optimizer state are float32, also under --amp


def check_device(name: str, flag: str = "--device") -> torch.device:
    """The torch device `name` names, refused unless this machine can run a model on it."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise UsageError(
            f"{flag} {name!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from error
    kind = device.type
    if kind == "cpu":
        return device
    if kind == "meta":
        raise UsageError(f"{flag} {name}: the meta device holds no data; use cpu, cuda or mps")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: CUDA is not available on this machine; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"{flag} {name}: this machine has {count} CUDA device(s)")
        return device
    backend = getattr(torch.backends, kind, None) or getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise UsageError(f"{flag} {name}: torch has no usable {kind} device here; use cpu")
    return device


def check_writable_folder(folder: Path, longest_name: str, flag: str) -> None:
    """Create and remove a temp file named like the longest one a run writes in `folder`.

    Missing folders are created for the probe and removed again. Catches a folder that is a
    file, read-only or not writable, and names too long for the file system.
    """
    created: list[Path] = []
    probe = temp_path(folder / longest_name)
    try:
        for parent in reversed([folder, *folder.parents]):
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
            elif not parent.is_dir():
                raise UsageError(f"{flag} {folder}: {parent} is a file, not a folder")
        with open(probe, "xb"):
            pass
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{flag} {folder}: cannot write there ({_reason(error, probe)})") from None
    finally:
        for new in reversed(created):
            with contextlib.suppress(OSError):
                new.rmdir()


def check_run_outputs(files: RunFiles, model_flag: str, stage_names: Sequence[str] = ()) -> None:
    """The checkpoint's folder takes every file the run may write there (`RunFiles.written`):
    checkpoint, stats, lock, best, last-good, step and stage checkpoints."""
    if files.checkpoint.is_dir():
        raise UsageError(f"{model_flag} {files.checkpoint}: is a folder; name the checkpoint file")
    written = files.written(list(stage_names))
    check_writable_folder(files.folder, max((p.name for p in written), key=len), model_flag)
    for path in written:
        if path.is_dir():
            raise UsageError(
                f"{model_flag} {files.checkpoint}: {path} is a folder where the run writes a file; "
                "move it away or choose another name"
            )


def _reason(error: OSError, probe: Path) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return f"a file name of {len(probe.name)} characters is too long here"
    return error.strerror or type(error).__name__


def check_fits_in_memory(
    num_params: int, trainable: int, optimizer: str, device: torch.device
) -> None:
    """Refuse a model whose weights, gradients and optimizer state exceed the free memory.

    Activations are not counted, so a model that passes may still not fit; one that fails
    cannot.
    """
    slots = OPTIMIZER_SLOTS.get(optimizer, 2)
    needed = BYTES_PER_VALUE * (num_params + trainable * (1 + slots))
    available = available_memory(device)
    if available is not None and needed > available:
        raise UsageError(
            f"the model has {num_params:,} parameters: weights, gradients and {optimizer} state "
            f"need at least {_gib(needed)}, but {device} has {_gib(available)} available; "
            "choose smaller --num-blocks/--embed-dim/--context-len"
        )


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device` (None where it cannot be told)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _cpu_available()
    return None


def _cpu_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"
