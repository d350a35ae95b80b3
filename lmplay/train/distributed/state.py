"""Rank-aware checkpoint components: whole weights and optimizer moments gathered from FSDP
shards (so a `.lmp` file loads at any world size), every rank's generators, per-rank seeding.

`model_state`, `optimizer_state` and `rng_state` give the component the checkpoint table holds
for this world: the plain single-process adapters in one process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmplay.state import capture_rng_state, restore_rng_state
from lmplay.train.components import ModelState, OptimizerState, RngState
from lmplay.train.distributed.sharding import is_sharded
from lmplay.train.distributed.world import World


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


def model_state(model: nn.Module) -> ModelState:
    """The model's checkpoint component: gathered whole from FSDP shards when sharded."""
    return FullModelState(model) if is_sharded(model) else ModelState(model)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> OptimizerState:
    """The optimizer's checkpoint component: moments gathered whole when the model is sharded."""
    return FullOptimizerState(model, optimizer) if is_sharded(model) else OptimizerState(optimizer)


def rng_state(world: World) -> RngState | RankRngState:
    """The generators' checkpoint component: every rank's under torchrun, else this process's."""
    return RankRngState(world) if world.distributed else RngState()
