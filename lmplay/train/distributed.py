"""Everything that depends on the rank: process group, rank shares, reductions, rank-0 output.

`torchrun --nproc-per-node=N -m lmplay.cli.trainer ...` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set. Every rank builds the same plan, batcher and cursor, so all ranks see the same
logical batch; `rank_share` gives each its deterministic part of the batch's mini-batches, and
the sums the step and validation report are reduced across ranks, so every rank holds the same
global figures (and the same stats, counters and checkpoint components). Only rank 0 writes.

With WORLD_SIZE unset or 1 the world is `SINGLE`: no process group, no collective, and every
helper here returns its input unchanged, so one process runs exactly as without this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import nn

from lmplay.config import PARALLELISMS
from lmplay.errors import UsageError
from lmplay.state import capture_rng_state, restore_rng_state
from lmplay.train.components import ModelState, OptimizerState

T = TypeVar("T")


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
        tensor = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def max_int(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=_comm_device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor.item())

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def on_main(self, write: Callable[[], None]) -> None:
        """Run `write` on rank 0 only; every rank returns once it is done (a file written once,
        complete before any rank reads it or exits)."""
        if self.is_main:
            write()
        self.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (picklable values; used for RNG states)."""
        if not self.distributed:
            return [value]
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


def start(world: World, device: torch.device) -> torch.device:
    """Create the process group (NCCL for CUDA, gloo otherwise); returns this rank's device.

    A CUDA device without an index becomes `cuda:LOCAL_RANK`. Does nothing in one process.
    """
    if not world.distributed:
        return device
    device = local_device(device, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=_device_id(device))
    return device


def local_device(device: torch.device, world: World) -> torch.device:
    """`cuda` means this rank's GPU, `cuda:LOCAL_RANK`, when there are several ranks."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def finish(world: World, exit_code: int = 0, *, wait: bool = True) -> None:
    """Drop the process group, after every rank got here (`wait`): rank 0 has written and
    reported before any rank exits, so torchrun never tears down a rank that is still saving.
    After an error a rank does not wait: the others may never come."""
    hold_exit_code(exit_code)
    if world.distributed and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def hold_exit_code(code: int, env: dict[str, str] | None = None) -> None:
    """Under torchrun, once a rank knows its non-zero exit code, let no signal change it.

    As soon as one rank exits with a non-zero code (143 after an agreed stop, 2 after a bad
    flag), torchrun sends SIGTERM to the others, which are exiting with the same code at that
    moment (often inside interpreter shutdown, where Python handlers no longer run); without this
    they would report death by signal instead of their own exit code. Ignoring the signal is
    safe: the rank has nothing left to do but exit, and torchrun SIGKILLs a rank that hangs.
    """
    env = os.environ if env is None else env  # type: ignore[assignment]
    if code == 0 or env.get("WORLD_SIZE", "1") in ("", "1"):
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def _device_id(device: torch.device) -> torch.device | None:
    return device if device.type == "cuda" else None


def _comm_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_rank_share(
    items: Sequence[T], world: World, *, keep_step: bool = True
) -> list[tuple[T, bool]]:
    """This rank's part of `items` as (item, live) pairs: items r, r + W, r + 2W, ... (round
    robin, so with length-sorted mini-batches every rank gets short and long ones).

    With `keep_step` every rank gets ceil(len / W) entries: a rank that runs out takes stand-ins
    (`items[0]`, live False) whose results it must weigh by zero, so that every rank runs the
    same number of forward/backward passes and no collective waits forever.
    """
    mine = [(item, True) for item in items[world.rank :: world.size]]
    if keep_step and items:
        rounds = -(-len(items) // world.size)
        mine.extend((items[0], False) for _ in range(rounds - len(mine)))
    return mine


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """No gradient all-reduce inside unless `enabled` (the last micro-step of an optimizer step).

    DDP has `no_sync()`; an FSDP2 module `set_requires_gradient_sync`; a plain module neither.
    """
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: Any) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def gradient_factor(world: World) -> float:
    """DDP and FSDP average gradients over ranks; the loss is already divided by the global
    token count, so each rank's loss is multiplied by the world size to make that a sum."""
    return float(world.size)


def parallelize(
    loss_model: nn.Module, world: World, device: torch.device, amp_dtype: torch.dtype | None
) -> nn.Module:
    """The module the training step calls: `loss_model` itself in one process, else wrapped by
    DistributedDataParallel or sharded by FSDP2 (each block, then the LossModel as the root,
    so the output head runs inside the root's forward, unsharded)."""
    if not world.distributed:
        return loss_model
    if world.parallel == "fsdp":
        return _fully_shard(loss_model, amp_dtype)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss_model, device_ids=device_ids)


def _fully_shard(loss_model: nn.Module, amp_dtype: torch.dtype | None) -> nn.Module:
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    policy = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32)
    blocks = getattr(loss_model.model, "blocks", None)
    if blocks is None:
        raise UsageError("--parallel fsdp needs a model with `blocks` (one FSDP unit per block)")
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(loss_model, mp_policy=policy)
    register_fsdp_forward_method(loss_model, "scores")  # validation calls it, not forward
    return loss_model


def is_sharded(model: nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def full_model_state(model: nn.Module) -> dict[str, Any]:
    """The whole model's weights on the CPU on rank 0 ({} on other ranks); every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def load_full_model_state(model: nn.Module, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state gathered to rank 0, in torch's own index-keyed layout (the
    one a single process saves), so the checkpoint loads at any world size."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
    return {
        "state": {index[name]: moments for name, moments in by_name["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in by_name["param_groups"]
        ],
    }


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = _parameter_names(model, optimizer)
    by_name = {
        "state": {names[int(i)]: moments for i, moments in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, by_name, options=options)


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order (the order of torch's integer keys)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def rank_rng_states(world: World, own: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's generators at the top level (what one process restores) and every other rank's
    under `other_ranks`, so dropout continues bit-exactly at an unchanged world size."""
    states = world.gather(own)
    if len(states) == 1:
        return own
    return {**states[0], "other_ranks": states[1:]}


def this_rank_rng_state(world: World, stored: dict[str, Any]) -> dict[str, Any] | None:
    """The stored generators of this rank; None when the checkpoint has none for it (the world
    grew): that rank keeps its own seeded generators (see `seed_rank`)."""
    if world.rank == 0:
        return stored
    others = stored.get("other_ranks") or []
    return others[world.rank - 1] if world.rank - 1 < len(others) else None


def seed_rank(world: World, seed: int) -> None:
    """Reseed torch on every rank after the weights are built, so dropout masks differ between
    ranks (the weights, drawn before, are the same everywhere) and depend on the seed alone, not
    on how many draws building the model took: an `hf:` model and the same folder imported
    into lmplay's twin architecture train with the same masks."""
    torch.manual_seed((seed * 1_000_003 + world.rank) % 2**63)


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


class FullModelState(ModelState):
    """An FSDP model's weights, gathered whole to rank 0 at save and set from the whole at load,
    so the `.lmp` file holds plain tensors and loads at any world size."""

    def state_dict(self) -> dict[str, Any]:
        return full_model_state(self.model)

    def _apply(self, state: dict[str, Any]) -> None:
        load_full_model_state(self.model, state)


class FullOptimizerState(OptimizerState):
    """An FSDP optimizer's moments, gathered whole in the single-process layout."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        super().__init__(optimizer)
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return full_optimizer_state(self.model, self.optimizer)

    def _apply(self, state: dict[str, Any]) -> None:
        load_full_optimizer_state(self.model, self.optimizer, state)


class RankRngState:
    """Every rank's generators: rank 0's where one process looks, the others beside them.

    At an unchanged world size each rank restores its own, so dropout continues bit-exactly. When
    the world size changes, ranks that exist in both keep theirs, a new rank keeps its freshly
    seeded generators (`seed_rank`), and a dropped rank's state is left unused: the batch sequence
    is unaffected, only the dropout masks of the new ranks differ from a run at the old size.
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def state_dict(self) -> dict[str, Any]:
        return rank_rng_states(self.world, capture_rng_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        own = this_rank_rng_state(self.world, state)
        if own is not None:
            restore_rng_state(own)


def adapt_checkpoint_map(
    entries: dict[str, Any], world: World, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Swap in the rank-aware adapters of a distributed run (in one process: nothing changes)."""
    if not world.distributed:
        return
    entries["rng"].stateful = RankRngState(world)
    if is_sharded(model):
        entries["model"].stateful = FullModelState(model)
        entries["optimizer"].stateful = FullOptimizerState(model, optimizer)
