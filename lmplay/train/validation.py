"""Validation scores (loss, accuracy, word accuracy) and a readable example.

Word accuracy and the example decode the model's *teacher-forced* argmax prediction: at every
truth position of a sample the likeliest next token given the true tokens before it. The
prediction therefore covers exactly the truth span the model saw (a sample is already cut to the
context), word for word comparable with the truth. One forward pass per row gives all three
scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmplay.data.samples import IGNORE_INDEX, Sample, collate
from lmplay.data.tokenizer import get_tokenizer
from lmplay.train.distributed.sharding import local_rank_share
from lmplay.train.distributed.world import SINGLE, World
from lmplay.train.loss import as_loss_model
from lmplay.train.placement import Placement, Precision

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


@dataclass(frozen=True)
class ValidationScores:
    loss: float  # per-token mean cross-entropy over every truth token of the set
    accuracy: float  # share of truth tokens the argmax predicted
    word_accuracy: float  # mean over samples of `word_accuracy`, each sample counting once
    loss_tokens: int


@torch.no_grad()
def score_validation_set(
    model: nn.Module,
    samples: Sequence[Sample],
    batch_size: int,
    placement: Placement,
) -> ValidationScores:
    """Loss, token accuracy and word accuracy of `samples`, from one forward pass over each row.

    With several ranks each scores its share of the rows and the sums are reduced, so every
    rank returns the single-process figures (float rounding aside). The caller sets eval mode.
    """
    if not samples:
        raise ValueError("a validation set needs at least one sample")
    tokenizer = get_tokenizer()
    loss_sum, correct, words = 0.0, 0, 0.0
    world = placement.world
    for index, predicted, sample_loss in _teacher_forced(
        model, samples, batch_size, placement.device, placement.precision, world
    ):
        sample = samples[index]
        loss_sum += sample_loss
        correct += sum(p == t for p, t in zip(predicted, sample.truth, strict=True))
        words += word_accuracy(tokenizer.decode(list(sample.truth)), tokenizer.decode(predicted))
    if world.distributed:
        loss_sum, correct, words = world.sum([loss_sum, correct, words])
    tokens = sum(len(sample.truth) for sample in samples)
    return ValidationScores(loss_sum / tokens, correct / tokens, words / len(samples), tokens)


def teacher_forced_predictions(
    model: nn.Module,
    samples: Sequence[Sample],
    batch_size: int,
    placement: Placement,
) -> list[list[int]]:
    """Per sample, in order, the argmax token at each truth position (`len(sample.truth)` ids).

    Every rank predicts every sample (no share): an FSDP forward is a collective all ranks join.
    """
    predictions: list[list[int]] = [[] for _ in samples]
    device, precision = placement.device, placement.precision
    for index, predicted, _ in _teacher_forced(model, samples, batch_size, device, precision):
        predictions[index] = predicted
    return predictions


@torch.no_grad()
def _teacher_forced(
    model: nn.Module,
    samples: Sequence[Sample],
    batch_size: int,
    device: torch.device,
    precision: Precision,
    world: World = SINGLE,
) -> Iterator[tuple[int, list[int], float]]:
    """(index in `samples`, argmax at each truth position, summed cross-entropy of its truth).

    Rows of similar length are batched together to save padding; padding sits after each row's
    tokens, so it changes no prediction and no loss. With several ranks, only this rank's share
    of the batches is yielded (stand-in batches keep FSDP's collectives in step).
    """
    loss_model = as_loss_model(model)
    loss_model = getattr(loss_model, "module", loss_model)  # no DistributedDataParallel here
    order = sorted(range(len(samples)), key=lambda i: samples[i].num_tokens)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for rows, live in local_rank_share(batches, world):
        batch = collate([samples[i] for i in rows])
        targets = batch.targets.to(device)  # (B, T), IGNORE_INDEX off the truth
        with precision.autocast():
            scores = loss_model.scores(batch.input_ids.to(device), targets)
        assert scores.losses is not None and scores.predictions is not None
        row_losses = scores.losses.double().sum(dim=1)  # (B,)
        predicted = scores.predictions.cpu()  # (B, T)
        mask = batch.targets != IGNORE_INDEX  # (B, T): True at truth positions
        if not live:
            continue
        for index, row, keep, loss in zip(rows, predicted, mask, row_losses.tolist(), strict=True):
            yield index, row[keep].tolist(), loss


def validation_example(
    model: nn.Module,
    sample: Sample,
    placement: Placement,
    max_chars: int = EXAMPLE_CHARS,
) -> dict[str, str]:
    """Prompt, truth and prediction of one sample, decoded and each at most `max_chars` long.

    The prompt keeps its end (the words right before the truth), truth and prediction their
    start, so the three still line up when read one under the other.
    """
    (predicted,) = teacher_forced_predictions(model, [sample], 1, placement)
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
