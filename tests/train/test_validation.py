"""Word accuracy (edit-distance alignment), teacher-forced predictions and readable examples."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from lmp_testing import evaluate
from torch import nn

from lmplay.data.samples import Sample
from lmplay.data.tokenizer import EOT_ID, get_tokenizer
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.models.registry import ModelArgs
from lmplay.train.placement import Placement, Precision
from lmplay.train.validation import (
    EXAMPLE_CHARS,
    score_validation_set,
    shorten,
    teacher_forced_predictions,
    validation_example,
    word_accuracy,
)

CPU = torch.device("cpu")
ON_CPU = Placement.on(CPU)
WORDS = ["castle", "storm", "night", "river", "king", "queen", "stone", "crown", "sword", "ship"]


@pytest.mark.parametrize(
    ("truth", "prediction", "expected"),
    [
        ("the king rode out", "the king rode out", 1.0),
        ("the king rode out", "the queen rode out", 0.75),  # one substitution
        ("the king rode out", "the rode out", 0.75),  # one deletion
        ("the king rode out", "the old king rode out", 1.0),  # an insertion costs no match
        ("the king rode out", "a king rode far out today", 0.75),  # all three kinds
        ("the king rode out", "", 0.0),
        ("a b", "b a", 0.5),  # equal-cost alignments: the one with a match counts
        ("a b c d", "d c b a", 0.25),
        ("  the\tking \n rode ", "the king rode", 1.0),  # any whitespace splits words
        ("King.", "king.", 0.0),  # words compare exactly: case and punctuation count
        ("", "", 1.0),
        ("", "something", 0.0),
        ("   ", "\n", 1.0),  # whitespace only is empty
    ],
)
def test_word_accuracy_cases(truth: str, prediction: str, expected: float) -> None:
    assert word_accuracy(truth, prediction) == pytest.approx(expected)


def _reference_matches(want: list[str], got: list[str]) -> int:
    """Full-table Levenshtein over (cost, -matches) tuples: slow, obviously right."""
    table = [[(j, 0) for j in range(len(got) + 1)]]
    for i in range(1, len(want) + 1):
        row = [(i, 0)]
        for j in range(1, len(got) + 1):
            cost, neg = table[i - 1][j - 1]
            diagonal = (cost, neg - 1) if want[i - 1] == got[j - 1] else (cost + 1, neg)
            up, left = table[i - 1][j], row[j - 1]
            row.append(min(diagonal, (up[0] + 1, up[1]), (left[0] + 1, left[1])))
        table.append(row)
    return -table[-1][-1][1]


@pytest.mark.parametrize("seed", range(5))
def test_word_accuracy_matches_a_reference_alignment(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        want = [rng.choice("abcd") for _ in range(rng.randint(1, 12))]
        got = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        accuracy = word_accuracy(" ".join(want), " ".join(got))
        assert accuracy == _reference_matches(want, got) / len(want)
        assert 0.0 <= accuracy <= 1.0


def test_shorten_keeps_words_and_the_limit() -> None:
    text = " ".join(WORDS * 10)
    assert shorten("short", 10) == "short"
    start = shorten(text, 40)
    assert len(start) <= 40 and start.endswith("…")
    assert text.startswith(start[:-1]) and text[len(start) - 1] == " "  # cut between words
    end = shorten(text, 40, keep="end")
    assert len(end) <= 40 and end.startswith("…")
    assert text.endswith(end[1:]) and text[-len(end)] == " "
    assert shorten("x" * 100, 10) == "x" * 9 + "…"  # one long word is cut inside
    assert shorten("abc", 1) == "…"
    with pytest.raises(ValueError):
        shorten("abc", 0)


class _CopyModel(nn.Module):
    """Predicts that every token repeats: the argmax at position t is the input at t.

    Its hidden state is a one-hot over the few token ids it knows, and `lm_head` maps each
    back to its id, so the head stays small even for GPT-2's vocabulary.
    """

    def __init__(self, vocab_size: int, known: set[int]) -> None:
        super().__init__()
        ids = sorted(known)
        self.slot = torch.zeros(vocab_size, dtype=torch.long)
        self.slot[ids] = torch.arange(len(ids))
        self.lm_head = nn.Linear(len(ids), vocab_size, bias=False)
        with torch.no_grad():
            self.lm_head.weight.zero_()
            self.lm_head.weight[ids, torch.arange(len(ids))] = 1.0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        slots = self.slot[input_ids]
        return nn.functional.one_hot(slots, self.lm_head.in_features).float()  # (B, T, C)


class _OracleModel(_CopyModel):
    """Knows the next token after every token of its samples (each must have only one)."""

    def __init__(self, vocab_size: int, samples: list[Sample]) -> None:
        super().__init__(vocab_size, _ids_of(samples))
        self.next_token = torch.zeros(vocab_size, dtype=torch.long)
        for sample in samples:
            tokens = sample.prompt + sample.truth
            for current, following in itertools.pairwise(tokens):
                assert self.next_token[current] in (0, following), "ambiguous next token"
                self.next_token[current] = following

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.next_token[input_ids])


def _ids_of(samples: list[Sample]) -> set[int]:
    return {0, *(token for sample in samples for token in sample.prompt + sample.truth)}


def _word_samples(count: int, seed: int) -> list[Sample]:
    """End-of-text, then one-token words cycling through WORDS: ` castle storm night ...`."""
    tokenizer = get_tokenizer()
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        words = [WORDS[i % len(WORDS)] for i in range(rng.randint(2, 3 * len(WORDS)))]
        truth = tuple(tokenizer.encode(" " + " ".join(words)))
        assert len(truth) == len(words)
        samples.append(Sample((EOT_ID,), truth))
    return samples


def test_word_accuracy_of_stub_models() -> None:
    samples = _word_samples(7, seed=0)
    vocab = get_tokenizer().n_vocab
    oracle = _OracleModel(vocab, samples)
    scores = score_validation_set(oracle, samples, 3, ON_CPU)
    assert scores.word_accuracy == 1.0 and scores.accuracy == 1.0
    # Copying shifts the prediction one word right: "<|endoftext|> w1 .. w(n-1)" vs "w1 .. wn".
    expected = sum((len(s.truth) - 1) / len(s.truth) for s in samples) / len(samples)
    copied = score_validation_set(_CopyModel(vocab, _ids_of(samples)), samples, 2, ON_CPU)
    assert copied.word_accuracy == pytest.approx(expected)
    with pytest.raises(ValueError):
        score_validation_set(oracle, [], 2, ON_CPU)


def test_tiny_model_accuracy_does_not_depend_on_batching() -> None:
    torch.manual_seed(0)
    model = get_experiment("gpt2ish").build(ModelArgs(**TINY_SIZES, vocab_size=1000))
    model = model.double().eval()
    tokenizer = get_tokenizer()
    rng = random.Random(1)
    samples = [  # ragged rows: padding must not change any prediction
        Sample(
            tuple(rng.randrange(1000) for _ in range(rng.randint(1, 20))),
            tuple(rng.randrange(1000) for _ in range(rng.randint(1, 40))),
        )
        for _ in range(6)
    ]
    one_by_one = [teacher_forced_predictions(model, [s], 1, ON_CPU)[0] for s in samples]
    assert [len(p) for p in one_by_one] == [len(s.truth) for s in samples]
    assert teacher_forced_predictions(model, samples, 4, ON_CPU) == one_by_one
    expected = sum(
        word_accuracy(tokenizer.decode(list(s.truth)), tokenizer.decode(p))
        for s, p in zip(samples, one_by_one, strict=True)
    ) / len(samples)
    loss, accuracy, tokens = evaluate(model, samples, len(samples), CPU, Precision())
    for batch_size in (1, 4, len(samples)):
        scores = score_validation_set(model, samples, batch_size, ON_CPU)
        assert scores.word_accuracy == pytest.approx(expected, abs=1e-12)
        # the one pass gives the same loss and token accuracy as the training code's evaluate
        assert scores.loss == pytest.approx(loss, rel=1e-6)  # float32 sums, other order
        assert scores.accuracy == accuracy and scores.loss_tokens == tokens
    example = validation_example(model, samples[0], ON_CPU)
    assert example["prediction"] == shorten(tokenizer.decode(one_by_one[0]), EXAMPLE_CHARS)


def test_validation_example_is_short_and_aligned() -> None:
    tokenizer = get_tokenizer()
    words = " ".join(WORDS * 12)
    prompt = tuple(tokenizer.encode("Prologue. " + words))
    truth = tuple(tokenizer.encode(" " + words))
    sample = Sample(prompt, truth)
    model = _OracleModel(tokenizer.n_vocab, [Sample((EOT_ID,), truth)])
    example = validation_example(model, sample, ON_CPU)
    assert set(example) == {"prompt", "truth", "prediction"}
    assert all(len(text) <= EXAMPLE_CHARS for text in example.values())
    assert example["prompt"].startswith("…") and example["prompt"].endswith("ship")
    assert example["truth"].startswith(" castle storm") and example["truth"].endswith("…")
    assert example["prediction"] == example["truth"]
    short = validation_example(model, Sample((EOT_ID,), truth[:3]), ON_CPU)
    assert short == {
        "prompt": "<|endoftext|>",
        "truth": " castle storm night",
        "prediction": (" castle storm night"),
    }
