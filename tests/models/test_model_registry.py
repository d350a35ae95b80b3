import pytest
import torch
from torch import nn

from lmplay import compat
from lmplay.errors import UsageError
from lmplay.models import (
    TINY_SIZES,
    ModelArgs,
    describe_experiments,
    experiment_aliases,
    experiment_names,
    get_experiment,
    register,
    registry,
)
from lmplay.models.modules import flops_per_token


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish with it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_names_are_sorted_and_include_presets():
    names = experiment_names()
    assert names == sorted(names)
    for expected in (
        "gpt2ish",
        "gpt2ish_124m",
        "gpt2ish_355m",
        "modern",
        "modern_162m",
        "resscale",
    ):
        assert expected in names


def test_unknown_experiment_lists_every_valid_name():
    with pytest.raises(UsageError) as info:
        get_experiment("foo")
    msg = str(info.value)
    assert msg.startswith("unknown --exp 'foo' (a registered name, or hf:PATH for a local ")
    assert msg.endswith(", ".join(experiment_names()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(embed_dim=30, num_heads=4), "--embed-dim 30 is not divisible by --num-heads 4"),
        (dict(num_blocks=0), "--num-blocks must be positive, got 0"),
        (dict(context_len=-8), "--context-len must be positive, got -8"),
        (dict(num_heads=2.0), "--num-heads must be an integer, got 2.0"),
        (dict(dropout=1.0), "--dropout must be in [0, 1), got 1.0"),
    ],
)
def test_bad_sizes_name_the_flag(overrides, message):
    with pytest.raises(UsageError) as info:
        get_experiment("gpt2ish").args(**overrides)
    assert str(info.value) == message


def test_rotary_needs_even_head_dim():
    with pytest.raises(UsageError, match="even head dim"):
        get_experiment("modern").args(embed_dim=30, num_heads=2)
    # gpt2ish has no rotary, so the same sizes are fine there.
    assert get_experiment("gpt2ish").args(embed_dim=30, num_heads=2).head_dim == 15


def test_args_apply_only_non_none_overrides():
    exp = get_experiment("gpt2ish")
    args = exp.args(num_blocks=3, embed_dim=None, vocab_size=97)
    assert args.num_blocks == 3
    assert args.embed_dim == exp.default_sizes["embed_dim"]
    assert args.vocab_size == 97


def test_model_args_round_trip_and_reject_unknown_keys():
    args = ModelArgs(**TINY_SIZES, vocab_size=97, dropout=0.1)
    assert ModelArgs.from_dict(args.to_dict()) == args
    with pytest.raises(UsageError, match="unknown model args \\['n_layer'\\]"):
        ModelArgs.from_dict({**args.to_dict(), "n_layer": 4})
    incomplete = args.to_dict()
    del incomplete["embed_dim"]
    with pytest.raises(UsageError, match="missing \\['embed_dim'\\]"):
        ModelArgs.from_dict(incomplete)


def test_register_rejects_duplicates_and_incomplete_sizes(scratch_registry):
    @register("scratch", "a test model", **TINY_SIZES)
    class Scratch(nn.Module):
        pass

    assert get_experiment("scratch").model_class is Scratch
    with pytest.raises(ValueError, match="already registered"):
        register("scratch", "again", **TINY_SIZES)(Scratch)
    with pytest.raises(ValueError, match="needs exactly the sizes"):
        register("other", "no context", num_blocks=1, embed_dim=8, num_heads=1)


def _table_params(table: str) -> dict[str, int]:
    rows = table.split("\n\n")[0].splitlines()[1:]  # the aliases follow a blank line
    return {row.split()[0]: int(row.split()[5].replace(",", "")) for row in rows}


def test_describe_counts_match_built_models():
    overrides = dict(TINY_SIZES, vocab_size=97)
    listed = _table_params(describe_experiments(overrides))
    assert sorted(listed) == experiment_names()
    for name, count in listed.items():
        exp = get_experiment(name)
        model = exp.build(exp.args(**overrides))
        assert count == sum(p.numel() for p in model.parameters()), name


def test_gpt2ish_124m_is_gpt2_small():
    exp = get_experiment("gpt2ish_124m")
    # The published parameter count of GPT-2 small (124M) with its tied head.
    assert exp.num_params(exp.args()) == 124_439_808


def test_flops_counted_from_the_model_match_the_gpt2_estimate():
    exp = get_experiment("gpt2ish_124m")
    args = exp.args()
    # Counted from the built model's matmul weights, against the closed-form 12*L*d^2 + d*V
    # estimate (GPT-2 small at 1,024 tokens: 854,438,400 FLOPs per token, forward + backward).
    assert exp.flops_per_token(args) == flops_per_token(args) == 854_438_400


def test_meta_build_allocates_nothing():
    exp = get_experiment("gpt2ish_355m")
    model = exp.build_meta(exp.args())
    assert all(p.device == torch.device("meta") for p in model.parameters())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("gpt2ish_med", "gpt2ish_124m"),
        ("gpt2ish_large", "gpt2ish_355m"),
        ("modern_med", "modern_162m"),
    ],
)
def test_an_old_name_still_works_and_warns_once(old, new, monkeypatch, capsys):
    monkeypatch.setattr(compat, "_WARNED", set())
    assert get_experiment(old) is get_experiment(new)
    get_experiment(old)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: --exp {old} is the old name of {new}; use --exp {new}"
    ]
    assert f"{old} -> {new}" in describe_experiments().split("\n\n")[1]
    assert old not in experiment_names()


def test_every_old_name_stands_for_a_registered_experiment_and_hides_none():
    for old, new in experiment_aliases().items():
        assert new in experiment_names() and old not in experiment_names()


def test_a_checkpoint_of_an_old_name_resumes_under_the_new_one(monkeypatch, capsys):
    from lmplay.config import ModelConfig, RunConfig
    from lmplay.errors import CheckpointError
    from lmplay.train.model_setup import model_identity

    monkeypatch.setattr(compat, "_WARNED", set())
    args = get_experiment("gpt2ish_124m").args(**TINY_SIZES)
    stored = {"state_args": {"exp": "gpt2ish_med", "model_args": args.to_dict()}}
    for exp in ("gpt2ish_124m", "gpt2ish_med"):
        cfg = RunConfig(model=ModelConfig(exp=exp))
        assert model_identity(cfg, stored, None)[1] == args
    assert "old name of gpt2ish_124m" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="holds a 'gpt2ish_med' model but --exp is 'gpt2ish'"):
        model_identity(RunConfig(), stored, None)
