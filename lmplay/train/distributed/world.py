"""This process's place among the ranks of a torchrun job, read from its environment.

torch is imported inside the collective methods only: `lmp_trainer` reads the world (and quiets
other ranks) before its flags are known to be valid, and `--help` must not wait for torch.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from lmplay.config import PARALLELISMS
from lmplay.errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one torchrun job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    parallel: str = "ddp"  # how the model is replicated when size > 1: ddp or fsdp

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that prints, writes stats and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks (float64); the values themselves in one process."""
        if not self.distributed:
            return list(values)
        import torch

        tensor = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def max_int(self, value: int) -> int:
        if not self.distributed:
            return value
        import torch

        tensor = torch.tensor([value], dtype=torch.int64, device=_comm_device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor.item())

    def barrier(self) -> None:
        if self.distributed:
            import torch

            torch.distributed.barrier()

    def on_main(self, write: Callable[[], None]) -> None:
        """Run `write` on rank 0 only; every rank returns once it is done (a file written once,
        complete before any rank reads it or exits)."""
        if self.is_main:
            write()
        self.barrier()

    def local_device(self, device: Any) -> Any:
        """`cuda` means this rank's GPU, `cuda:LOCAL_RANK`, when there are several ranks."""
        if self.distributed and device.type == "cuda" and device.index is None:
            import torch

            return torch.device("cuda", self.local_rank)
        return device

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (picklable values; used for RNG states)."""
        if not self.distributed:
            return [value]
        import torch

        gathered: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(gathered, value)
        return gathered


SINGLE = World()


def world_from_env(parallel: str = "ddp", env: dict[str, str] | None = None) -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; SINGLE without them."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = env.get(name)
        try:
            values[name] = default if raw in (None, "") else int(raw)
        except ValueError:
            raise UsageError(f"environment {name}={raw!r} must be an integer") from None
    size, rank = values["WORLD_SIZE"], values["RANK"]
    if size < 1 or not 0 <= rank < size or values["LOCAL_RANK"] < 0:
        raise UsageError(f"environment RANK={rank} WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE")
    if parallel not in PARALLELISMS:
        raise UsageError(f"--parallel {parallel}: choose one of {', '.join(PARALLELISMS)}")
    return World(rank=rank, size=size, local_rank=values["LOCAL_RANK"], parallel=parallel)


def under_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """More than one process: torchrun set WORLD_SIZE above 1."""
    env = os.environ if env is None else env
    return env.get("WORLD_SIZE", "1") not in ("", "1")


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0 (or no torchrun at all): the process that checks folders, locks and writes."""
    env = os.environ if env is None else env
    return env.get("RANK", "0") in ("", "0")


def _comm_device() -> Any:
    import torch

    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def hold_exit_code(code: int, env: dict[str, str] | None = None) -> None:
    """Under torchrun, once a rank knows its non-zero exit code, let no signal change it.

    As soon as one rank exits with a non-zero code (143 after an agreed stop, 2 after a bad
    flag), torchrun sends SIGTERM to the others, which are exiting with the same code at that
    moment (often inside interpreter shutdown, where Python handlers no longer run); without this
    they would report death by signal instead of their own exit code. Ignoring the signal is
    safe: the rank has nothing left to do but exit, and torchrun SIGKILLs a rank that hangs.
    """
    env = os.environ if env is None else env  # type: ignore[assignment]
    if code == 0 or not under_torchrun(env):
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def quiet_other_ranks(env: dict[str, str] | None = None) -> None:
    """Output comes from rank 0: other ranks' stdout and stderr go to /dev/null, except a
    traceback, which still reaches the terminal (prefixed by the rank) so a crash is visible.

    Runs before the flags are parsed, so a bad flag is reported once.
    """
    env = os.environ if env is None else env  # type: ignore[assignment]
    rank = env.get("RANK", "0")
    if rank in ("", "0"):
        return
    real_stderr = sys.__stderr__
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr = devnull

    def report(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if real_stderr is not None:
            text = "".join(traceback.format_exception(kind, error, tb))
            real_stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
            real_stderr.flush()

    sys.excepthook = report


def resume_command(environ: Mapping[str, str] = os.environ) -> str:
    """The command that resumes this run: lmp_trainer's, or torchrun's when torchrun started it.

    torchrun keeps its own flags to itself, but its environment tells how many processes each
    node ran; a run may resume at another world size, so this is one way of several.
    """
    flags = " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    if "TORCHELASTIC_RUN_ID" not in environ:
        return f"lmp_trainer {flags}".rstrip()
    per_node = environ.get("LOCAL_WORLD_SIZE", "1")
    if environ.get("GROUP_WORLD_SIZE", "1") == "1":
        launcher = f"torchrun --standalone --nproc-per-node={per_node}"
    else:  # several nodes: their rendezvous flags are theirs to repeat
        nodes = environ["GROUP_WORLD_SIZE"]
        launcher = f"torchrun --nnodes={nodes} --nproc-per-node={per_node} <rendezvous flags>"
    return f"{launcher} -m lmplay.cli.trainer {flags}".rstrip()
