"""Document corpora without the stores: templates, raw rows to documents, chunk keys, chunks collapsed to
documents, and the response shape of row vs document corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.chunking import POSITIONS, ChunkingError, chunk_key, render, template_fields
from offline.preprocess.documents import DocumentFormat, DocumentOptions, normalise_document, preprocess_documents
from offline.preprocess.qa import PreprocessError
from offline.preprocess.rejects import Reject
from services.search.api_models import SearchItemModel
from services.search.ports import AnnHit
from services.search.service import item_model
from services.search.stages.chunks import collapse
from services.search.state import Item, MatchedChunk, merge_chunks


def test_a_template_names_its_fields_and_leaves_out_separators_of_empty_ones() -> None:
    assert template_fields("{title}. {body} ({ title })") == ["title", "body"]
    assert render("{title}. {text}", {"title": "T", "text": "Body."}) == "T. Body."
    assert render("{title}. {text}", {"title": "", "text": "Body."}) == "Body."
    assert render("{title}. {text}", {"title": "T", "text": None}) == "T"
    assert render("{tags}: {text}", {"tags": ["a", "b"], "text": "x"}) == "a b: x"
    with pytest.raises(ChunkingError, match="line 7 has no field 'body'"):
        render("{title}. {body}", {"title": "x"}, where="line 7")
    with pytest.raises(ChunkingError, match="must name fields"):
        template_fields("no fields")


def test_chunk_keys_pack_document_and_position() -> None:
    assert chunk_key(7, 3) == 7 * POSITIONS + 3
    with pytest.raises(ChunkingError, match="position 1024"):
        chunk_key(7, POSITIONS)
    with pytest.raises(ChunkingError, match="document id -1"):
        chunk_key(-1, 0)


def test_raw_rows_become_documents_or_rejects_with_their_reason(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        "\n".join(
            [
                json.dumps({"_id": "1", "title": "A", "text": "a", "year": 2001}),
                json.dumps({"_id": "x", "title": "B", "text": "b"}),
                json.dumps({"_id": "3", "title": "", "text": ""}),
                json.dumps({"_id": "1", "title": "C", "text": "c"}),
                json.dumps({"_id": "4", "title": "D"}),
                json.dumps({"_id": "5", "title": "E", "text": "e", "doc_id": 9}),
                "not json",
            ]
        )
        + "\n"
    )
    opts = DocumentOptions.make(DocumentFormat.BEIR, template=None, store=["title"])
    report = preprocess_documents(raw, tmp_path / "docs.jsonl", opts)
    rows = [json.loads(line) for line in (tmp_path / "docs.jsonl").read_text().splitlines()]
    # The stored title plus the template's fields; an unstored field (5's doc_id) is dropped, not refused.
    assert rows == [{"id": 1, "title": "A", "text": "a"}, {"id": 5, "title": "E", "text": "e"}]
    assert report.by_reason() == {
        "non-integer id": 1,
        "empty document": 1,
        "duplicate id": 1,
        "missing field": 1,
        "malformed json": 1,
    }
    assert report.written == 2
    everything = DocumentOptions.make(DocumentFormat.BEIR, template=None)
    reserved = normalise_document({"_id": 5, "text": "e", "doc_id": 9}, everything, "line 6")
    assert isinstance(reserved, Reject)
    assert reserved.reason == "reserved field"
    assert everything.kept({"_id": 1, "title": "A", "text": "a", "year": 2001}) == {
        "title": "A",
        "text": "a",
        "year": 2001,
    }
    with pytest.raises(PreprocessError, match="--encode is required"):
        DocumentOptions.make(DocumentFormat.JSONL, template=None)
    with pytest.raises(PreprocessError, match="'chunk' is mmsearch's own"):
        DocumentOptions.make(DocumentFormat.BEIR, template=None, filter_fields=["chunk"])


def _hit(doc: str, position: int, score: float) -> AnnHit:
    return AnnHit(id=f"{doc}-{position}", distance=score, document=doc, position=position, passage=f"p{doc}.{position}")


def test_chunks_collapse_to_documents_by_max_or_top_sum() -> None:
    hits = [_hit("1", 0, 0.9), _hit("2", 0, 0.8), _hit("2", 3, 0.7), _hit("1", 1, 0.1), _hit("3", 2, 0.75)]
    by_max = collapse("ann_matcher", hits, summed=1, limit=10)
    assert [(i.id, i.final_retrieval_score) for i in by_max] == [("1", 0.9), ("2", 0.8), ("3", 0.75)]
    assert [c.position for c in by_max[1].chunks] == [0, 3]
    assert by_max[1].chunks[0] == MatchedChunk(0, "p2.0", 0.8, "ann_matcher")
    top2 = collapse("ann_matcher", hits, summed=2, limit=2)
    assert [(i.id, round(i.final_retrieval_score, 6)) for i in top2] == [("2", 1.5), ("1", 1.0)]


def test_fusion_merges_two_matchers_passages_by_rank() -> None:
    ann = (MatchedChunk(0, "a", 0.9, "ann"), MatchedChunk(2, "c", 0.5, "ann"))
    bm25 = (MatchedChunk(2, "c", 7.0, "bm25"), MatchedChunk(5, "f", 3.0, "bm25"))
    assert [(c.position, c.matcher) for c in merge_chunks(ann, bm25)] == [(0, "ann"), (2, "bm25"), (5, "bm25")]


def test_row_corpora_keep_the_reference_item_shape() -> None:
    row = item_model(Item(id="1", retrieval_scores={"ann_matcher": 0.5}, final_retrieval_score=0.5))
    assert "matchedChunks" not in row.model_dump()
    doc = item_model(
        Item(
            id="1",
            retrieval_scores={"ann_matcher": 0.5},
            final_retrieval_score=0.5,
            chunks=(MatchedChunk(4, "the passage", 0.5, "ann_matcher"),),
        )
    )
    assert doc.model_dump()["matchedChunks"] == [
        {"position": 4, "text": "the passage", "score": 0.5, "matcher": "ann_matcher"}
    ]
    assert set(SearchItemModel.model_fields) - set(row.model_dump()) == {"matchedChunks"}
