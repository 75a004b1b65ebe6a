"""Chunking on the model's own tokens (mmsearch/chunking.py), with all-MiniLM-L6-v2's real tokenizer."""

from __future__ import annotations

import itertools

import pytest
from tokenizers import Tokenizer

from mmsearch.chunking import ChunkingError, ChunkOptions, chunk_text
from tests.fixtures.models import minilm_source


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_source() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _tokens(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


SENTENCES = [f"Sentence number {n} talks about topic {n} in some detail." for n in range(40)]
DOCUMENT = " ".join(SENTENCES)


def test_a_short_text_is_one_chunk_spanning_it(tokenizer: Tokenizer) -> None:
    chunks = chunk_text("A short text. Two sentences.", tokenizer, ChunkOptions(tokens=64))
    assert len(chunks) == 1
    assert chunks[0].text("A short text. Two sentences.") == "A short text. Two sentences."


def test_chunks_fit_end_at_sentences_cover_the_text_and_overlap_by_whole_sentences(tokenizer: Tokenizer) -> None:
    options = ChunkOptions(tokens=40, overlap=15)
    chunks = chunk_text(DOCUMENT, tokenizer, options)
    assert len(chunks) > 5
    for c in chunks:
        text = c.text(DOCUMENT)
        assert _tokens(tokenizer, text) == c.tokens <= 40  # counted on the model's own word pieces
        assert text.startswith("Sentence number")
        assert text.endswith("detail.")
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0
    assert chunks[-1].end == len(DOCUMENT)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start <= prev.end  # no gap
        shared = DOCUMENT[nxt.start : prev.end]
        assert _tokens(tokenizer, shared) <= 15
        assert nxt.start > prev.start  # always moves on
    assert any(nxt.start < prev.end for prev, nxt in itertools.pairwise(chunks))  # overlap happened


def test_a_sentence_longer_than_a_chunk_is_cut_between_tokens(tokenizer: Tokenizer) -> None:
    text = " ".join(f"word{n}" for n in range(300))  # no sentence end at all
    chunks = chunk_text(text, tokenizer, ChunkOptions(tokens=32))
    assert all(c.tokens <= 32 for c in chunks)
    assert sum(c.tokens for c in chunks) == _tokens(tokenizer, text)  # no overlap asked: every token once


def test_bad_options_and_too_many_chunks_are_refused_with_the_reason(tokenizer: Tokenizer) -> None:
    with pytest.raises(ChunkingError, match="do not fit the model's window of 254"):
        ChunkOptions(tokens=300).check(window=254)
    with pytest.raises(ChunkingError, match="less than the size"):
        ChunkOptions(tokens=64, overlap=64).check(window=254)
    with pytest.raises(ChunkingError, match="doc 7 makes more than 3 chunks"):
        chunk_text(DOCUMENT, tokenizer, ChunkOptions(tokens=20, max_chunks=3), where="doc 7")
