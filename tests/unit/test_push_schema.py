"""Milvus schema decisions of `push milvus`: corpus names, filter-field typing, index parameters."""

from __future__ import annotations

import pytest

from offline.preprocess.records import CorpusRow
from offline.push.errors import PushError
from offline.push.schema import IndexType, Metric, ScalarKind, check_corpus_name, index_params, infer_scalar_fields


def _rows(*values: dict[str, object]) -> list[CorpusRow]:
    return [CorpusRow.model_validate({"id": i, **v}) for i, v in enumerate(values)]


def test_category_lists_become_varchar_arrays_with_room() -> None:
    rows = _rows({"category": ["a", "bb"]}, {"category": ["x" * 70]}, {"category": []}, {})
    (field,) = infer_scalar_fields(["category"], rows)
    assert field.kind == ScalarKind.STRING_ARRAY
    assert field.max_length == 128  # 70 bytes -> next power of two
    assert field.max_capacity == 8
    assert field.default() == []


def test_scalar_kinds() -> None:
    rows = _rows({"n": 1, "f": 1, "s": "é", "b": True}, {"n": 2, "f": 2.5, "s": "x", "b": False})
    kinds = {f.name: f.kind for f in infer_scalar_fields(["n", "f", "s", "b"], rows)}
    assert kinds == {"n": ScalarKind.INT, "f": ScalarKind.FLOAT, "s": ScalarKind.STRING, "b": ScalarKind.BOOL}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_rows({"c": "a"}, {"c": ["a"]}), "mixes"),
        (_rows({"c": {"nested": 1}}), "use text, numbers or a list of text"),
        (_rows({"other": 1}), "no row of the corpus has a 'c' field"),
        (_rows({"c": 1}, {}), "missing in 1 rows"),
    ],
)
def test_unusable_filter_fields_are_refused_by_name(rows: list[CorpusRow], message: str) -> None:
    with pytest.raises(PushError, match=message):
        infer_scalar_fields(["c"], rows)


def test_filter_field_names_are_checked() -> None:
    with pytest.raises(PushError, match="cannot be a Milvus field name"):
        infer_scalar_fields(["bad-name"], _rows({"bad-name": "x"}))
    with pytest.raises(PushError, match="cannot be a Milvus field name"):
        infer_scalar_fields(["id"], _rows({}))


@pytest.mark.parametrize("name", ["faq_qa", "txt_to_img_demo", "A1"])
def test_good_corpus_names(name: str) -> None:
    assert check_corpus_name(name) == name


@pytest.mark.parametrize("name", ["", "faq-qa", "1faq", "faq__v2", "faq qa", "x" * 200])
def test_bad_corpus_names(name: str) -> None:
    with pytest.raises(PushError, match="not usable as a Milvus alias"):
        check_corpus_name(name)


def test_index_params() -> None:
    assert index_params(IndexType.HNSW, Metric.IP, 10) == {
        "index_type": "HNSW",
        "metric_type": "IP",
        "params": {"M": 16, "efConstruction": 200},
    }
    assert index_params(IndexType.IVF_FLAT, Metric.COSINE, 503)["params"] == {"nlist": 12}
    assert index_params(IndexType.IVF_FLAT, Metric.IP, 10_000_000)["params"] == {"nlist": 1024}
    assert index_params(IndexType.IVF_FLAT, Metric.IP, 5)["params"] == {"nlist": 1}
    assert index_params(IndexType.FLAT, Metric.IP, 5)["params"] == {}
