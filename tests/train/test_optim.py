"""Weight-decay groups partition every experiment's trainable parameters by one rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmplay.errors import UsageError
from lmplay.models import TINY_SIZES, experiment_names, get_experiment
from lmplay.models.registry import ModelArgs
from lmplay.train.optim import OPTIMIZERS, build_optimizer, decay_groups, is_norm

CPU = torch.device("cpu")


def tiny(exp: str) -> nn.Module:
    return get_experiment(exp).build(ModelArgs(**TINY_SIZES, vocab_size=97))


@pytest.mark.parametrize("exp", experiment_names())
def test_groups_partition_trainable_parameters_and_follow_the_rule(exp: str) -> None:
    model = tiny(exp)
    groups = decay_groups(model)
    decay = {id(p) for _, p in groups.decay}
    no_decay = {id(p) for _, p in groups.no_decay}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert decay | no_decay == trainable
    assert not decay & no_decay
    assert len(groups.decay) + len(groups.no_decay) == len(trainable)
    exempt = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if is_norm(module) or isinstance(module, nn.Embedding) or name.endswith("bias"):
                exempt.add(id(param))
    for _, param in model.named_parameters():
        if getattr(param, "skip_weight_decay", False):
            exempt.add(id(param))
    assert no_decay == exempt & trainable
    for _, param in groups.decay:
        assert param.dim() >= 2  # only matrices decay in every registered architecture


def test_frozen_parameters_are_in_no_group() -> None:
    model = tiny("gpt2ish")
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    groups = decay_groups(model)
    assert all(p is not frozen for _, p in groups.decay + groups.no_decay)


def test_group_table_counts_parameters() -> None:
    model = tiny("modern")
    table = decay_groups(model).table()
    total = sum(p.numel() for p in model.parameters())
    assert table["decay"]["parameters"] + table["no_decay"]["parameters"] == total


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_and_steps_with_decay_only_where_allowed(name: str) -> None:
    model = tiny("gpt2ish")
    optimizer, _ = build_optimizer(name, model, lr=1e-3, weight_decay=0.1, device=CPU)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    before = [p.detach().clone() for p in model.parameters()]
    model.lm_head(model(torch.randint(0, 97, (2, 8)))).sum().backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_unknown_optimizer_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="adamw, adam, adagrad, sgd, rmsprop"):
        build_optimizer("lion", tiny("gpt2ish"), lr=1e-3, weight_decay=0.0, device=CPU)
