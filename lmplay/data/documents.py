"""Tokenize prompt/truth rows into training documents that know where their sentences end.

The batcher cuts long documents at sentence ends, so each document carries the token offsets of
those ends. A sentence ends at ". ", "! ", "? " (also after a closing quote or bracket) and at
a newline. The cut goes just before the last whitespace character between the two sentences,
so the space or newline in front of the next word starts the next sentence: GPT-2's
pretokenizer splits a whitespace run at exactly that place (a space joins the next word, a
newline stands alone), so tokenizing the sentences one by one and concatenating gives the same
tokens as tokenizing the whole text.
"""

from __future__ import annotations

import hashlib
import json
import re
from itertools import accumulate, chain, pairwise

import datasets

from lmplay.data.tokenizer import EOT_ID, RANKS_SHA256, get_tokenizer

# Whitespace as tiktoken's regex engine sees it: Python's \s also counts \x1c-\x1f.
_WS = r"[^\S\x1c-\x1f]"
# A whitespace run that follows a terminator (optionally closed by a quote or bracket) or holds a
# newline, and is followed by more text; group 1 is its last character, where the cut goes.
# "Mr. Smith" is cut too: consistency beats guessing.
_SENTENCE_GAP = rf"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]])|(?={_WS}*\n)){_WS}*({_WS})(?!{_WS}|\Z)"
_SENTENCE_GAP_RE = re.compile(_SENTENCE_GAP)
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
    """Cut `text` into sentences that concatenate back to `text` exactly.

    `"Hi. Go!\\n\\nNext"` gives `["Hi.", " Go!\\n", "\\nNext"]`: the whitespace right before
    a sentence's first word belongs to it. Trailing whitespace stays with the last sentence;
    empty text gives no sentences.
    """
    cuts = [match.start(1) for match in _SENTENCE_GAP_RE.finditer(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if a < b]


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
    definition = [_DOCUMENTS_VERSION, ds._fingerprint, train_prompt, RANKS_SHA256, _SENTENCE_GAP]
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
    out: dict[str, list] = {name: [] for name in DOCUMENT_FEATURES}
    for prompt, truth in zip(batch["prompt"], batch["truth"], strict=True):
        prompt_sentences, truth_sentences = _encode_sentences(prompt), _encode_sentences(truth)
        if train_prompt:
            prompt_sentences, truth_sentences = [], prompt_sentences + truth_sentences
        prompt_ids = list(chain.from_iterable(prompt_sentences))
        truth_ids = [*chain.from_iterable(truth_sentences), EOT_ID]
        ends = list(accumulate(len(tokens) for tokens in truth_sentences)) or [0]
        ends[-1] += 1  # the EOT closes the last sentence
        out["prompt_ids"].append(prompt_ids)
        out["truth_ids"].append(truth_ids)
        out["sentence_ends"].append(ends)
        out["num_tokens"].append(len(prompt_ids) + len(truth_ids))
    return out


def _encode_sentences(text: str) -> list[list[int]]:
    # One call per sentence: for sentence-sized strings, encode_ordinary_batch's thread pool
    # costs several times the encoding itself. Parallelism comes from `num_proc`.
    encode = get_tokenizer().encode_ordinary
    return [encode(sentence) for sentence in split_sentences(text)]
