"""GPT-2 BPE tokenizer built from the ranks file that ships inside the package.

tiktoken's own `get_encoding("gpt2")` downloads its ranks on first use; building the same
encoding from the bundled file keeps every run offline.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257

RANKS_PATH = Path(str(resources.files("lmplay.data.bundled").joinpath("gpt2.tiktoken")))
# sha256 of tiktoken's r50k_base.tiktoken, which holds the same ranks as its "gpt2" encoding.
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# tiktoken's r50k_pat_str (shared by its "gpt2" and "r50k_base" encodings); a test pins it.
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


class TokenizerFileError(RuntimeError):
    """The bundled ranks file is missing or altered: the installation is broken."""


def build_tokenizer(ranks_path: Path = RANKS_PATH) -> tiktoken.Encoding:
    """Build the GPT-2 encoding from a local ranks file, refusing one whose sha256 differs."""
    try:
        data = ranks_path.read_bytes()
    except OSError as exc:
        raise TokenizerFileError(f"cannot read GPT-2 BPE ranks file {ranks_path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise TokenizerFileError(
            f"GPT-2 BPE ranks file {ranks_path} has sha256 {digest}, expected {RANKS_SHA256}; "
            "reinstall lmplay"
        )
    # expected_hash also makes tiktoken discard a stale copy it may hold in its own cache.
    ranks = load_tiktoken_bpe(str(ranks_path), expected_hash=RANKS_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """The process-wide GPT-2 encoding (built once from the bundled ranks)."""
    return build_tokenizer()
