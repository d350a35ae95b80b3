"""Activation checkpointing: the same gradients, parameter names and generation."""

from __future__ import annotations

import pytest
import torch
from test_step import VOCAB, accumulate, gradients, ragged_samples
from torch import nn

from lmplay.errors import UsageError
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.generation import generate
from lmplay.models.registry import ModelArgs
from lmplay.train.memory import enable_activation_checkpointing

PACK_LEN = TINY_SIZES["context_len"]


def model(exp: str, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return get_experiment(exp).build(ModelArgs(**TINY_SIZES, vocab_size=VOCAB, dropout=dropout))


@pytest.mark.parametrize("exp", ["gpt2ish", "modern", "resscale"])
def test_gradients_equal_with_recomputed_blocks(exp: str) -> None:
    samples = ragged_samples(6, seed=2)
    # Dropout on: the recomputation must draw the masks of the first forward pass.
    plain, checkpointed = model(exp, dropout=0.1), model(exp, dropout=0.1)
    enable_activation_checkpointing(checkpointed)
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    for net in (plain, checkpointed):
        torch.manual_seed(1)
        accumulate(net, samples, 3, PACK_LEN)
    expected, got = gradients(plain), gradients(checkpointed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)


def test_recomputation_happens_in_backward() -> None:
    net = model("gpt2ish")
    enable_activation_checkpointing(net)
    calls = []
    net.blocks[0].mlp.register_forward_pre_hook(lambda *_: calls.append(True))
    accumulate(net, ragged_samples(2, seed=0), 2)
    assert len(calls) == 2  # the forward pass, then again in backward


def test_generation_with_a_kv_cache_is_unchanged() -> None:
    plain, checkpointed = model("modern"), model("modern")
    enable_activation_checkpointing(checkpointed)
    expected = generate(plain, [1, 2, 3], 6, temperature=0.8, seed=5)
    assert generate(checkpointed, [1, 2, 3], 6, temperature=0.8, seed=5) == expected


def test_a_model_with_its_own_method_is_asked_to_do_it() -> None:
    class Wrapped(nn.Module):
        enabled = False

        def enable_activation_checkpointing(self) -> None:
            self.enabled = True

    wrapped = Wrapped()
    enable_activation_checkpointing(wrapped)
    assert wrapped.enabled


def test_a_model_without_blocks_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match="Linear has no `blocks`"):
        enable_activation_checkpointing(nn.Linear(2, 2))
