"""Readable validation: an example (prompt, truth, prediction) and word accuracy.

Both decode the model's *teacher-forced* argmax prediction: at every truth position of a sample
the likeliest next token given the true tokens before it. The prediction therefore covers exactly
the truth span the model saw (a sample is already cut to the context), word for word comparable
with the truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmplay.data.batcher import IGNORE_INDEX, Sample, collate
from lmplay.data.tokenizer import get_tokenizer
from lmplay.train.step import Precision

EXAMPLE_CHARS = 300  # longest prompt, truth and prediction an example (and a stats record) keeps
_ELLIPSIS = "…"


def word_accuracy(truth: str, prediction: str) -> float:
    """Share of the truth's words that a word-level Levenshtein alignment matches.

    Words are split on whitespace. The alignment has the fewest substitutions, insertions and
    deletions (each costs 1); among alignments of equal cost the one with the most matched words
    counts. Accuracy is matched words / truth words, in [0, 1]; unlike 1 - WER, extra predicted
    words lower it only where they displace a match. Empty cases: both empty is 1.0, an empty
    truth with words predicted is 0.0.
    """
    want, got = truth.split(), prediction.split()
    if not want:
        return 0.0 if got else 1.0
    return _aligned_matches(want, got) / len(want)


def _aligned_matches(want: Sequence[str], got: Sequence[str]) -> int:
    # One integer per cell, cost * scale - matches: comparing it compares (cost, -matches)
    # lexicographically, since matches never reach scale.
    scale = len(want) + 1
    previous = [j * scale for j in range(len(got) + 1)]  # the empty truth prefix: insertions
    for i, word in enumerate(want, start=1):
        current = [i * scale]  # deletions only
        for j, guess in enumerate(got, start=1):
            diagonal = previous[j - 1] + (-1 if word == guess else scale)
            current.append(min(diagonal, previous[j] + scale, current[j - 1] + scale))
        previous = current
    return -previous[-1] % scale


@torch.no_grad()
def teacher_forced_predictions(
    model: nn.Module,
    samples: Sequence[Sample],
    batch_size: int,
    device: torch.device,
    precision: Precision,
) -> list[list[int]]:
    """Per sample, in order, the argmax token at each truth position (`len(sample.truth)` ids).

    Rows of similar length are batched together to save padding; padding sits after each row's
    tokens, so it changes no prediction.
    """
    order = sorted(range(len(samples)), key=lambda i: samples[i].num_tokens)
    predictions: list[list[int]] = [[] for _ in samples]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate([samples[i] for i in rows])
        with precision.autocast():
            logits = model(batch.input_ids.to(device))  # (B, T, V)
        predicted = logits.argmax(dim=-1).cpu()  # (B, T)
        mask = batch.targets != IGNORE_INDEX  # (B, T): True at truth positions
        for i, row, keep in zip(rows, predicted, mask, strict=True):
            predictions[i] = row[keep].tolist()
    return predictions


@torch.no_grad()
def mean_word_accuracy(
    model: nn.Module,
    samples: Sequence[Sample],
    batch_size: int,
    device: torch.device,
    precision: Precision,
) -> float:
    """Mean over `samples` of `word_accuracy(decoded truth, decoded prediction)`.

    Every sample counts once, however many words it holds. The caller sets eval mode.
    """
    if not samples:
        raise ValueError("mean_word_accuracy needs at least one sample")
    tokenizer = get_tokenizer()
    predictions = teacher_forced_predictions(model, samples, batch_size, device, precision)
    scores = [
        word_accuracy(tokenizer.decode(list(sample.truth)), tokenizer.decode(predicted))
        for sample, predicted in zip(samples, predictions, strict=True)
    ]
    return sum(scores) / len(scores)


def validation_example(
    model: nn.Module,
    sample: Sample,
    device: torch.device,
    precision: Precision,
    max_chars: int = EXAMPLE_CHARS,
) -> dict[str, str]:
    """Prompt, truth and prediction of one sample, decoded and each at most `max_chars` long.

    The prompt keeps its end (the words right before the truth), truth and prediction their
    start, so the three still line up when read one under the other.
    """
    (predicted,) = teacher_forced_predictions(model, [sample], 1, device, precision)
    tokenizer = get_tokenizer()
    return {
        "prompt": shorten(tokenizer.decode(list(sample.prompt)), max_chars, keep="end"),
        "truth": shorten(tokenizer.decode(list(sample.truth)), max_chars),
        "prediction": shorten(tokenizer.decode(predicted), max_chars),
    }


def shorten(text: str, limit: int, *, keep: str = "start") -> str:
    """`text` if it fits in `limit` characters, else its start (or end) and an ellipsis.

    The cut moves back to a space when one lies in the last fifth of the kept part, so words are
    not split; the result, ellipsis included, never exceeds `limit` characters.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
    if len(text) <= limit:
        return text
    room = limit - len(_ELLIPSIS)
    if keep == "start":
        head = text[:room]
        space = head.rfind(" ")
        head = head[:space] if space >= room * 4 // 5 else head
        return head.rstrip() + _ELLIPSIS
    tail = text[len(text) - room :] if room else ""
    space = tail.find(" ")
    tail = tail[space + 1 :] if 0 <= space <= room // 5 else tail
    return _ELLIPSIS + tail.lstrip()
