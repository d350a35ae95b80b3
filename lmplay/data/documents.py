"""Tokenize prompt/truth rows into training documents that know where their sentences end.

The batcher cuts long documents at sentence ends, so each document carries the token offsets of
those ends. Sentences are tokenized one by one and concatenated: GPT-2 BPE attaches a leading
space to the following word, so a cut just before the space after ". " falls between tokens,
and the concatenation nearly always equals the tokenization of the whole text. (It can differ
where a run of 3+ newlines or trailing whitespace would have merged into one token.)
"""

from __future__ import annotations

import hashlib
import json
import re
from itertools import accumulate, chain

import datasets

from lmplay.data.tokenizer import EOT_ID, RANKS_SHA256, get_tokenizer

# Zero-width split points: before the space that follows ".", "!" or "?" (optionally closed by a
# quote or bracket), and after every newline. "Mr. Smith" splits too; consistency beats guessing.
_SENTENCE_SPLIT = r"(?<=[.!?])(?= )|(?<=[.!?][\"'”’)\]])(?= )|(?<=\n)"
_SPLITTER = re.compile(_SENTENCE_SPLIT)
# Bump when the tokenization of a row changes, so that cached Arrow files are not reused.
_DOCUMENTS_VERSION = "documents-v1"

DOCUMENT_FEATURES = datasets.Features(
    {
        "prompt_ids": datasets.Sequence(datasets.Value("int32")),
        "truth_ids": datasets.Sequence(datasets.Value("int32")),
        "sentence_ends": datasets.Sequence(datasets.Value("int32")),
        "num_tokens": datasets.Value("int64"),
    }
)


def split_sentences(text: str) -> list[str]:
    """Cut `text` into sentence pieces that concatenate back to `text` exactly.

    A piece ends after ". ", "! " or "? " (the space starts the next piece) and after each
    newline, so "\\n\\n" gives a piece of its own. Empty text gives no pieces.
    """
    return [piece for piece in _SPLITTER.split(text) if piece]


def tokenize_documents(
    ds: datasets.Dataset, *, train_prompt: bool = False, num_proc: int | None = None
) -> datasets.Dataset:
    """Token ids of each prompt/truth row, with sentence ends; see DOCUMENT_FEATURES.

    - `prompt_ids`: tokens never trained on (empty for plain text, or with `train_prompt`,
      which moves the prompt to the front of the truth);
    - `truth_ids`: the truth's tokens followed by EOT;
    - `sentence_ends`: strictly increasing offsets into `truth_ids` where a sentence ends, the
      last one equal to `len(truth_ids)` (the EOT belongs to the last sentence);
    - `num_tokens`: `len(prompt_ids) + len(truth_ids)`.

    The result is cached by `datasets` under a fingerprint of the input, the options and the
    tokenizer, so a second call on the same data reads the Arrow files back.
    """
    missing = {"prompt", "truth"} - set(ds.column_names)
    if missing:
        raise ValueError(
            f"expected prompt/truth rows, missing {sorted(missing)} in {ds.column_names}"
        )
    definition = [_DOCUMENTS_VERSION, ds._fingerprint, train_prompt, RANKS_SHA256, _SENTENCE_SPLIT]
    fingerprint = hashlib.sha256(json.dumps(definition).encode()).hexdigest()[:32]
    return ds.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={"train_prompt": train_prompt},
        remove_columns=ds.column_names,
        features=DOCUMENT_FEATURES,
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )


def _tokenize_batch(batch: dict[str, list[str]], train_prompt: bool) -> dict[str, list]:
    # One encode_ordinary_batch call for every piece of the batch: tiktoken spreads it over
    # threads, which a per-row call would not.
    pieces: list[str] = []
    layout: list[tuple[int, int]] = []
    for prompt, truth in zip(batch["prompt"], batch["truth"], strict=True):
        prompt_pieces, truth_pieces = split_sentences(prompt), split_sentences(truth)
        pieces += prompt_pieces + truth_pieces
        layout.append((len(prompt_pieces), len(truth_pieces)))
    encoded = get_tokenizer().encode_ordinary_batch(pieces) if pieces else []

    out: dict[str, list] = {name: [] for name in DOCUMENT_FEATURES}
    start = 0
    for n_prompt, n_truth in layout:
        prompt_tokens = encoded[start : start + n_prompt]
        truth_tokens = encoded[start + n_prompt : start + n_prompt + n_truth]
        start += n_prompt + n_truth
        if train_prompt:
            prompt_tokens, truth_tokens = [], prompt_tokens + truth_tokens
        prompt_ids = list(chain.from_iterable(prompt_tokens))
        truth_ids = [*chain.from_iterable(truth_tokens), EOT_ID]
        ends = list(accumulate(len(tokens) for tokens in truth_tokens)) or [0]
        ends[-1] += 1  # the EOT closes the last sentence
        out["prompt_ids"].append(prompt_ids)
        out["truth_ids"].append(truth_ids)
        out["sentence_ends"].append(ends)
        out["num_tokens"].append(len(prompt_ids) + len(truth_ids))
    return out
