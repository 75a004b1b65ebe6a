"""The rank gate's arithmetic and its sample file: what a lower-precision cross-encoder must keep of fp32's top 10."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from offline.export.errors import ExportError
from offline.export.rank_agreement import (
    RankSample,
    enforce_gate,
    load_rank_sample,
    rank_agreement,
    top_k_overlap,
)

DOCS = [f"document {i}" for i in range(20)]


def test_top_k_overlap_counts_the_shared_members_of_the_two_top_k_sets() -> None:
    scores = np.arange(20, dtype=np.float32)
    assert top_k_overlap(scores, scores) == 1.0
    assert top_k_overlap(scores, -scores) == 0.0  # reversed: the two top 10s are disjoint
    swapped = scores.copy()
    swapped[[9, 10]] = swapped[[10, 9]]  # the 10th and 11th trade places: one member of the top 10 changes
    assert top_k_overlap(scores, swapped) == 0.9
    within = scores.copy()
    within[[18, 19]] = within[[19, 18]]  # order inside the top 10 does not count
    assert top_k_overlap(scores, within) == 1.0
    assert top_k_overlap(scores[:4], -scores[:4]) == 1.0  # fewer than k documents: all of them, whatever the order
    with pytest.raises(ValueError, match="different shapes"):
        top_k_overlap(scores, scores[:5])


def test_the_agreement_is_the_mean_over_queries_and_the_gate_refuses_below_it(tmp_path: Path) -> None:
    fp32, variant = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    base = np.arange(20, dtype=np.float32)

    def score(path: Path, query: str, docs: list[str]) -> npt.NDArray[np.float32]:
        if path == fp32 or query == "same":
            return base
        moved = base.copy()
        moved[[9, 10]] = moved[[10, 9]]
        return moved

    sample = RankSample([("same", DOCS), ("moved", DOCS)], "2 queries x 20 documents")
    agreement = rank_agreement(score, fp32, variant, sample=sample, gate=0.96)
    assert (agreement.mean_overlap, agreement.min_overlap, agreement.queries, agreement.k) == (0.95, 0.9, 2, 10)
    assert agreement.inputs == "2 queries x 20 documents"
    with pytest.raises(ExportError, match=r"int8 variant of 'ce' keeps 0\.95 of the fp32 graph's top 10 \(lowest "):
        enforce_gate("ce", "int8", agreement)
    enforce_gate("ce", "int8", agreement.model_copy(update={"gate": 0.95}))  # at the gate: accepted


def test_a_rank_sample_file_is_read_and_its_mistakes_are_named_by_line(tmp_path: Path) -> None:
    good = tmp_path / "sample.jsonl"
    rows = [{"query": "q1", "documents": DOCS}, {"query": "q2", "documents": DOCS[:12]}]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    sample = load_rank_sample(good)
    assert sample.groups == [("q1", DOCS), ("q2", DOCS[:12])]
    assert sample.description == "2 queries x 12-20 documents from sample.jsonl"

    cases = [
        ("{not json", r"line 1: not JSON"),
        (json.dumps({"documents": DOCS}), r'line 1: needs "query"'),
        (json.dumps({"query": "  ", "documents": DOCS}), r'line 1: needs "query"'),
        (json.dumps({"query": "q", "documents": "one string"}), r'line 1: needs "documents"'),
        (json.dumps({"query": "q", "documents": [1, 2]}), r'line 1: needs "documents"'),
        (json.dumps({"query": "q", "documents": DOCS[:10]}), r"line 1: 10 documents; the top 10 of a query is"),
        (json.dumps(["q", DOCS]), r'line 1: needs "query"'),
        ("", r"no queries in it"),
    ]
    for text, says in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ExportError, match=says):
            load_rank_sample(bad)
    with pytest.raises(ExportError, match="cannot read it"):
        load_rank_sample(tmp_path)  # a folder
    binary = tmp_path / "sample.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ExportError, match=r"not UTF-8 text \(byte 0\)"):
        load_rank_sample(binary)
