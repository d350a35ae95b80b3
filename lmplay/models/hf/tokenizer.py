"""GPT-2 tokenizer files for transformers, built from the bundled BPE ranks (no download).

transformers' GPT-2 tokenizer reads `vocab.json` (token string -> id) and `merges.txt` (the
merge rules in priority order). Both are a re-encoding of tiktoken's ranks: a token's string is
its bytes through GPT-2's byte-to-unicode table, its id is its rank, and the merge that makes a
token is the last step of byte-level BPE on its bytes using only lower-ranked merges.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from lmplay.data.tokenizer import EOT_ID, EOT_TOKEN, RANKS_PATH, RANKS_SHA256

# transformers' GPT-2 tokenizer files; a folder with any other tokenizer is not GPT-2 BPE.
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.cache
def _ranks() -> dict[bytes, int]:
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(RANKS_PATH), expected_hash=RANKS_SHA256)


def _as_unicode(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


@functools.cache
def gpt2_vocab() -> dict[str, int]:
    """vocab.json's content: every token's string and id, end-of-text included."""
    vocab = {_as_unicode(token): rank for token, rank in _ranks().items()}
    vocab[EOT_TOKEN] = EOT_ID
    return vocab


def _last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair whose merge makes `token`: BPE on its bytes with the merges ranked below it."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} is not the merge of two lower-ranked tokens")
    return parts[0], parts[1]


@functools.cache
def gpt2_merges() -> tuple[str, ...]:
    """merges.txt's rules, one `left right` per token of more than one byte, in rank order."""
    ranks = _ranks()
    tokens = sorted((t for t in ranks if len(t) > 1), key=ranks.__getitem__)
    return tuple(" ".join(map(_as_unicode, _last_merge(ranks, t))) for t in tokens)


def write_gpt2_tokenizer(folder: Path, context_len: int) -> None:
    """Write the files `AutoTokenizer.from_pretrained(folder)` loads as GPT-2's tokenizer."""
    (folder / VOCAB_FILE).write_text(json.dumps(gpt2_vocab(), ensure_ascii=False), "utf-8")
    merges = "#version: 0.2\n" + "\n".join(gpt2_merges()) + "\n"
    (folder / MERGES_FILE).write_text(merges, encoding="utf-8")
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": context_len,
        "bos_token": EOT_TOKEN,
        "eos_token": EOT_TOKEN,
        "unk_token": EOT_TOKEN,
        "add_prefix_space": False,
        "add_bos_token": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    special = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")


def folder_tokenizer_problem(folder: Path) -> str | None:
    """Why the tokenizer files in `folder` are not GPT-2's BPE, or None (GPT-2's, or none)."""
    if (folder / "tokenizer.model").exists():
        return "it holds a SentencePiece tokenizer (tokenizer.model)"
    vocab: dict[str, int] | None = None
    if (folder / "tokenizer.json").exists():
        model = json.loads((folder / "tokenizer.json").read_text("utf-8")).get("model", {})
        if model.get("type") != "BPE":
            return f"its tokenizer.json holds a {model.get('type')} model, not byte-level BPE"
        vocab = model.get("vocab")
    elif (folder / VOCAB_FILE).exists():
        vocab = json.loads((folder / VOCAB_FILE).read_text("utf-8"))
    if vocab is None:
        return None
    expected = gpt2_vocab()
    if not isinstance(vocab, dict) or any(vocab.get(k) != v for k, v in expected.items()):
        return f"its vocabulary ({len(vocab)} tokens) is not GPT-2's ({len(expected)} tokens)"
    return None
