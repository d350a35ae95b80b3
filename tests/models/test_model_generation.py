import pytest
import torch
from torch import nn

from lmplay.models import TINY_SIZES, experiment_names, get_experiment
from lmplay.models.generation import filter_logits, generate
from lmplay.models.modules import KVCache

VOCAB = 97
CONTEXT = TINY_SIZES["context_len"]
PROMPT = [5, 17, 3, 88, 42]


def build(name: str) -> nn.Module:
    exp = get_experiment(name)
    torch.manual_seed(0)
    return exp.build(exp.args(**TINY_SIZES, vocab_size=VOCAB)).eval()


@torch.no_grad()
def greedy_without_cache(model: nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Recompute the whole sequence for every new token: slow, obviously right."""
    seq = list(prompt)
    while len(seq) - len(prompt) < max_new_tokens and len(seq) <= CONTEXT:
        logits = model.lm_head(model(torch.tensor([seq[-CONTEXT:]])))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize("name", experiment_names())
def test_kv_cache_greedy_equals_recompute(name):
    model = build(name)
    # Asks for more than fits, so both must also stop at the same place: a full context.
    cached = generate(model, PROMPT, max_new_tokens=100)
    assert len(cached) == CONTEXT - len(PROMPT) + 1
    assert cached == greedy_without_cache(model, PROMPT, 100)


@pytest.mark.parametrize("name", experiment_names())
@torch.no_grad()
def test_cached_logits_match_full_forward_for_any_chunking(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(2))
    full = model(x)  # hidden states (B, T, C): the head adds nothing that could differ
    cache = KVCache(CONTEXT)
    # Prefill, a multi-token chunk (bottom-right-aligned mask), then single tokens.
    chunks = [model(x[:, :12], cache), model(x[:, 12:20], cache)]
    chunks += [model(x[:, t : t + 1], cache) for t in range(20, 30)]
    assert cache.pos == 30
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_seeded_sampling_is_reproducible():
    model = build("gpt2ish")
    kwargs = dict(max_new_tokens=20, temperature=1.0, top_k=None, top_p=None)
    a = generate(model, PROMPT, seed=7, **kwargs)
    torch.manual_seed(123)  # the global RNG must not matter
    assert generate(model, PROMPT, seed=7, **kwargs) == a
    assert generate(model, PROMPT, seed=8, **kwargs) != a


def test_top_k_one_is_greedy():
    model = build("modern")
    sampled = generate(model, PROMPT, 15, temperature=1.5, top_k=1, seed=0)
    assert sampled == generate(model, PROMPT, 15)


def test_stop_token_ends_generation_and_is_not_returned():
    model = build("gpt2ish")
    greedy = generate(model, PROMPT, 10)
    stop = greedy[3]
    first = greedy.index(stop)
    assert generate(model, PROMPT, 10, stop_token=stop) == greedy[:first]


def test_generate_restores_training_mode():
    model = build("gpt2ish").train()
    generate(model, PROMPT, 2)
    assert model.training


def test_prompt_limits():
    model = build("gpt2ish")
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="exceeds context"):
        generate(model, [1] * (CONTEXT + 1), 5)
    # A full-context prompt still gets the one token its last position predicts.
    assert len(generate(model, [1] * CONTEXT, 5)) == 1


def test_filter_logits_top_k_and_top_p():
    probs = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda out: torch.isfinite(out)[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2, top_p=None)) == [1, 2]
    # Smallest set whose mass reaches top_p: 0.5 + 0.2 >= 0.65, but 0.75 needs a third.
    assert kept(filter_logits(logits, top_k=None, top_p=0.65)) == [1, 2]
    assert kept(filter_logits(logits, top_k=None, top_p=0.75)) == [1, 2, 3]
    assert kept(filter_logits(logits, top_k=None, top_p=0.01)) == [1]
    assert kept(filter_logits(logits, top_k=None, top_p=1.0)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=1.0, top_k=0), "top_k"),
        (dict(temperature=1.0, top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(build("gpt2ish"), PROMPT, 3, **kwargs)
