import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmplay.models import TINY_SIZES, experiment_names, get_experiment
from lmplay.models.modules import RMSNorm

VOCAB = 97


def build(name: str, seed: int = 0, **overrides) -> nn.Module:
    exp = get_experiment(name)
    torch.manual_seed(seed)
    return exp.build(exp.args(**{**TINY_SIZES, "vocab_size": VOCAB, **overrides}))


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    return model.lm_head(model(x, **kwargs))  # (B, T, V)


@pytest.mark.parametrize("name", experiment_names())
def test_forward_returns_hidden_states_and_the_head_is_a_linear(name):
    model = build(name)
    hidden = model(tokens(3, 20))
    assert hidden.shape == (3, 20, TINY_SIZES["embed_dim"])
    assert isinstance(model.lm_head, nn.Linear)
    assert model.lm_head.weight.shape == (VOCAB, TINY_SIZES["embed_dim"])


def test_a_model_without_an_lm_head_is_refused_when_built():
    from lmplay.models.registry import ModelArgs, check_model_contract

    class Headless(nn.Module):
        def __init__(self, args: ModelArgs) -> None:
            super().__init__()
            self.out = nn.Linear(args.embed_dim, args.vocab_size)

    with pytest.raises(TypeError, match=r"Headless must expose its output layer as `self\.lm_"):
        check_model_contract(Headless(ModelArgs(**TINY_SIZES, vocab_size=VOCAB)))


@pytest.mark.parametrize("name", experiment_names())
def test_forward_backward_gives_finite_grads_everywhere(name):
    model = build(name)
    assert model.args.vocab_size == VOCAB
    x = tokens(3, 20)  # shorter than the context on purpose
    logits = logits_of(model, x)
    assert logits.shape == (3, 20, VOCAB)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    # An untrained model predicts close to uniform.
    assert abs(loss.item() - math.log(VOCAB)) < 0.5
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", experiment_names())
def test_changing_a_token_only_changes_later_logits(name):
    model = build(name).eval()
    x = tokens(2, 32)
    t = 17
    y = x.clone()
    y[:, t] = (y[:, t] + 1) % VOCAB
    a, b = logits_of(model, x), logits_of(model, y)
    torch.testing.assert_close(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


@pytest.mark.parametrize("name", experiment_names())
def test_longer_than_context_is_refused(name):
    model = build(name)
    model(tokens(1, TINY_SIZES["context_len"]))
    with pytest.raises(ValueError, match="exceed the context length"):
        model(tokens(1, TINY_SIZES["context_len"] + 1))


@pytest.mark.parametrize("name", experiment_names())
def test_same_seed_builds_identical_weights_and_state_round_trips(name):
    a, b = build(name, seed=3), build(name, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka
    c = build(name, seed=4)
    c.load_state_dict(a.state_dict())
    x = tokens(1, 10)
    torch.testing.assert_close(logits_of(c.eval(), x), logits_of(a.eval(), x), rtol=0, atol=0)


def test_dropout_is_active_only_in_training():
    model = build("gpt2ish", dropout=0.2)
    x = tokens(2, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_gpt2ish_init_follows_gpt2():
    blocks = 4
    model = build("gpt2ish", embed_dim=128, num_heads=4, num_blocks=blocks)
    assert model.lm_head.weight is model.wte.weight
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif ".ln_" in name or name.startswith("ln_f"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            residual_out = name.endswith("proj.weight")
            expected = 0.02 / math.sqrt(2 * blocks) if residual_out else 0.02
            assert p.std().item() == pytest.approx(expected, rel=0.1), name
            assert abs(p.mean().item()) < expected / 5, name


def test_modern_has_no_biases_rmsnorm_and_untied_head():
    model = build("modern")
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    norms = [m for m in model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 2 * TINY_SIZES["num_blocks"] + 1
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert model.lm_head.weight is not model.wte.weight
    tied = build("modern_tied")
    assert tied.lm_head.weight is tied.wte.weight


def test_resscale_gains_start_small_and_skip_weight_decay():
    model = build("resscale")
    gains = {n: p for n, p in model.named_parameters() if n.endswith(".gain")}
    assert len(gains) == 2 * TINY_SIZES["num_blocks"]
    for name, p in gains.items():
        assert p.skip_weight_decay is True, name
        assert torch.equal(p, torch.full_like(p, 0.1)), name
    # Everything else is left to the optimizer's generic rule.
    others = [p for n, p in model.named_parameters() if n not in gains]
    assert not any(getattr(p, "skip_weight_decay", False) for p in others)


def test_resscale_output_projections_are_not_depth_scaled():
    model = build("resscale", embed_dim=128, num_heads=4, num_blocks=4)
    proj = model.blocks[0].attn.proj.weight
    assert proj.std().item() == pytest.approx(0.02, rel=0.1)


def test_rmsnorm_normalises_to_unit_rms():
    norm = RMSNorm(64)
    x = torch.randn(4, 7, 64) * 5 + 2
    y = norm(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4, 7), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", experiment_names())
def test_packed_rows_give_each_sample_its_own_logits(name):
    """Several samples in one row: same logits as each alone (own positions, no cross-talk)."""
    from lmplay.data.packing import pack
    from lmplay.data.samples import Sample

    exp = get_experiment(name)
    if not exp.packs_rows:
        pytest.skip(f"{name} takes no positions/segments: it trains one sample per row")
    model = build(name).double().eval()
    rng = torch.Generator().manual_seed(7)
    lengths = [5, 17, 9, 30, 3, 12]  # inputs of 4..29 tokens; rows of 64 take several
    samples = [
        Sample((0,), tuple(torch.randint(1, VOCAB, (n,), generator=rng).tolist())) for n in lengths
    ]
    batch = pack(samples, TINY_SIZES["context_len"])
    assert batch.packed and batch.input_ids.size(0) < len(samples)
    with torch.no_grad():
        packed = logits_of(
            model, batch.input_ids, positions=batch.positions, segments=batch.segments
        )
        for r in range(batch.input_ids.size(0)):
            for slot in batch.segments[r].unique().tolist():
                if slot < 0:
                    continue
                where = (batch.segments[r] == slot).nonzero().flatten()
                alone = logits_of(model, batch.input_ids[r, where].unsqueeze(0))[0]
                assert torch.allclose(packed[r, where], alone, atol=1e-10), (name, r, slot)


def test_built_in_families_pack_rows():
    assert all(get_experiment(name).packs_rows for name in ("gpt2ish", "modern", "resscale"))


def test_packed_rows_refuse_a_kv_cache():
    from lmplay.models.modules import KVCache

    model = build("gpt2ish")
    x = tokens(1, 6)
    with pytest.raises(ValueError, match="cannot use a KV cache"):
        model(x, KVCache(64), positions=torch.arange(6)[None], segments=torch.zeros(1, 6).long())
