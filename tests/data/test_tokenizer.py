from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lmplay.data.tokenizer import (
    EOT_ID,
    GPT2_PAT_STR,
    RANKS_PATH,
    VOCAB_SIZE,
    TokenizerFileError,
    build_tokenizer,
    get_tokenizer,
)


def test_encodes_like_gpt2() -> None:
    enc = get_tokenizer()
    ids = enc.encode("Hello world, this is GPT-2.")
    assert ids == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 13]


def test_end_of_text_token() -> None:
    enc = get_tokenizer()
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [EOT_ID]
    assert enc.eot_token == EOT_ID == 50256
    assert enc.n_vocab == VOCAB_SIZE == 50257
    # Ordinary text that merely spells the marker must not become the special token.
    assert EOT_ID not in enc.encode_ordinary("<|endoftext|>")


def test_pattern_matches_tiktoken_gpt2() -> None:
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    assert openai_public.r50k_pat_str == GPT2_PAT_STR


@pytest.mark.parametrize(
    "text",
    [
        "naïve café, señor — ¿qué tal?",
        "日本語のテキストと中文文本",
        "emoji 🤖🚀 and combining e\u0301",
        "  leading spaces\n\n\ttabs\r\nand trailing  ",
        "",
    ],
)
def test_decode_inverts_encode(text: str) -> None:
    enc = get_tokenizer()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_builds_offline_with_an_empty_tiktoken_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tokenizer tried to use the network")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = build_tokenizer()
    assert enc.encode("Hello world") == [15496, 995]


def test_altered_ranks_file_is_refused(tmp_path: Path) -> None:
    altered = tmp_path / "gpt2.tiktoken"
    data = bytearray(RANKS_PATH.read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    altered.write_bytes(bytes(data))
    with pytest.raises(TokenizerFileError, match=r"gpt2\.tiktoken") as caught:
        build_tokenizer(altered)
    assert str(altered) in str(caught.value)


def test_missing_ranks_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tiktoken"
    with pytest.raises(TokenizerFileError, match=r"nowhere\.tiktoken"):
        build_tokenizer(missing)


def test_tokenizer_is_built_once() -> None:
    assert get_tokenizer() is get_tokenizer()
