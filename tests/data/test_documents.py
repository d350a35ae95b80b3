from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmplay.data.documents import split_sentences, tokenize_documents
from lmplay.data.source_spec import SourceSpec
from lmplay.data.sources import load_source
from lmplay.data.tokenizer import EOT_ID, get_tokenizer


def rows(truths: list[str], prompts: list[str] | None = None) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": prompts or [""] * len(truths), "truth": truths})


def encode(text: str) -> list[int]:
    return get_tokenizer().encode_ordinary(text)


# --- sentence splitting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", []),
        ("No terminator at all", ["No terminator at all"]),
        ("Hello. World", ["Hello.", " World"]),
        ("Mr. Smith came.", ["Mr.", " Smith came."]),
        ("Pi is 3.14 or so.", ["Pi is 3.14 or so."]),
        ("Wait... what?! No.", ["Wait...", " what?!", " No."]),
        ("Two  spaces. Here", ["Two  spaces.", " Here"]),
        ("End.  Next", ["End. ", " Next"]),
        ('He said "Go." She left.', ['He said "Go."', " She left."]),
        ("(Aside.) Then", ["(Aside.)", " Then"]),
        ("line one\nline two", ["line one", "\nline two"]),
        ("MASTER.\nBoatswain!\n\nBOATSWAIN.", ["MASTER.", "\nBoatswain!\n", "\nBOATSWAIN."]),
        ("a\n\n\n\nb", ["a\n\n\n", "\nb"]),
        ("a\n\n  indented", ["a\n\n ", " indented"]),
        ("\n\nstarts blank", ["\n", "\nstarts blank"]),
        ("trailing.  \n\n", ["trailing.  \n\n"]),
        ("crlf\r\nline", ["crlf\r", "\nline"]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


TEXTS = st.text(
    alphabet=st.sampled_from(list("ab Z.!?\n\t\r\"')’,;1é日🤖\x1c\x85\xa0\u2028\u3000")),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_sentences_rebuild_the_text_and_its_tokens(text: str) -> None:
    sentences = split_sentences(text)
    assert "".join(sentences) == text
    assert all(sentences)
    # Cuts fall where GPT-2's pretokenizer splits anyway, so no token changes.
    assert [t for s in sentences for t in encode(s)] == encode(text)


# --- tokenized documents -------------------------------------------------------------------


def test_plain_text_document() -> None:
    text = "It was dark. The rain fell!\nWho knew? Nobody."
    (doc,) = tokenize_documents(rows([text]))
    assert doc["prompt_ids"] == []
    assert doc["truth_ids"] == [*encode(text), EOT_ID]
    pieces = ["It was dark.", " The rain fell!", "\nWho knew?", " Nobody."]
    ends = list(accumulate(len(encode(p)) for p in pieces))
    assert doc["sentence_ends"] == [*ends[:-1], ends[-1] + 1]
    assert doc["num_tokens"] == len(doc["truth_ids"])


def test_empty_text_is_only_end_of_text() -> None:
    (doc,) = tokenize_documents(rows([""]))
    assert doc == {"prompt_ids": [], "truth_ids": [EOT_ID], "sentence_ends": [1], "num_tokens": 1}


def test_prompt_is_kept_apart_from_truth() -> None:
    prompt, truth = "Q: What is the capital of France? A:", " Paris. It is on the Seine."
    (doc,) = tokenize_documents(rows([truth], [prompt]))
    assert doc["prompt_ids"] == encode(prompt)
    assert doc["truth_ids"] == [*encode(truth), EOT_ID]
    assert doc["sentence_ends"] == [len(encode(" Paris.")), len(doc["truth_ids"])]
    assert doc["num_tokens"] == len(encode(prompt)) + len(encode(truth)) + 1


def test_train_prompt_moves_the_prompt_into_truth() -> None:
    prompt, truth = "Translate: chat", " cat"
    (doc,) = tokenize_documents(rows([truth], [prompt]), train_prompt=True)
    assert doc["prompt_ids"] == []
    assert doc["truth_ids"] == [*encode(prompt), *encode(truth), EOT_ID]
    # The prompt's end is a place the batcher may cut.
    assert doc["sentence_ends"] == [len(encode(prompt)), len(doc["truth_ids"])]
    assert doc["num_tokens"] == len(doc["truth_ids"])


def test_bundled_corpus_round_trips() -> None:
    source = load_source(SourceSpec(name="bard", bundled="shakespeare")).select(range(8))
    docs = tokenize_documents(source)
    enc = get_tokenizer()
    for row, doc in zip(source, docs, strict=True):
        assert doc["truth_ids"][-1] == EOT_ID
        assert enc.decode(doc["truth_ids"][:-1]) == row["truth"]
        assert doc["truth_ids"][:-1] == encode(row["truth"])
        assert len(doc["sentence_ends"]) > 10


@settings(max_examples=25, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=20), st.booleans())
def test_sentence_ends_invariants(texts: list[str], train_prompt: bool) -> None:
    prompts = [text[::-1] for text in texts]
    docs = tokenize_documents(rows(texts, prompts), train_prompt=train_prompt)
    enc = get_tokenizer()
    for text, prompt, doc in zip(texts, prompts, docs, strict=True):
        ends, truth_ids = doc["sentence_ends"], doc["truth_ids"]
        assert ends, "at least the end of text closes a sentence"
        assert all(a < b for a, b in zip([0, *ends], ends, strict=False))
        assert ends[-1] == len(truth_ids)
        assert truth_ids[-1] == EOT_ID and EOT_ID not in truth_ids[:-1]
        whole = prompt + text if train_prompt else text
        assert enc.decode(truth_ids[:-1]) == whole
        assert enc.decode(doc["prompt_ids"]) == ("" if train_prompt else prompt)
        assert doc["num_tokens"] == len(doc["prompt_ids"]) + len(truth_ids)


def test_columns_and_types() -> None:
    docs = tokenize_documents(rows(["Short."]))
    assert docs.column_names == ["prompt_ids", "truth_ids", "sentence_ends", "num_tokens"]
    assert docs.features["truth_ids"].feature.dtype == "int32"
    assert docs.features["num_tokens"].dtype == "int64"


def test_rows_without_prompt_truth_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        tokenize_documents(datasets.Dataset.from_dict({"text": ["x"]}))


def test_results_are_cached_under_a_deterministic_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"Row {i}. Done."}) + "\n" for i in range(50)))
    source = load_source(SourceSpec(name="rows", files=(str(path),)))
    first = tokenize_documents(source)
    again = tokenize_documents(load_source(SourceSpec(name="rows", files=(str(path),))))
    assert first._fingerprint == again._fingerprint
    assert first.cache_files and first.cache_files == again.cache_files
    with_prompt = tokenize_documents(source, train_prompt=True)
    assert with_prompt._fingerprint != first._fingerprint


def test_parallel_tokenization_matches_serial() -> None:
    source = load_source(SourceSpec(name="bard", bundled="shakespeare")).select(range(12))
    serial = tokenize_documents(source)
    parallel = tokenize_documents(source.flatten_indices(), num_proc=2)
    assert parallel.to_dict() == serial.to_dict()
