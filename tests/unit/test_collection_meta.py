from datetime import UTC, datetime

import pytest

from mmsearch.collection_meta import CollectionMeta, from_properties, physical_name, to_properties


def test_properties_round_trip_and_ignore_foreign_keys() -> None:
    meta = CollectionMeta(
        model_key="minilm",
        dim=384,
        vector_field="question_emb",
        metric="IP",
        index_type="HNSW",
        corpus="faq",
        count=503,
    )
    props = {**to_properties(meta), "collection.ttl.seconds": "0"}
    assert all(isinstance(v, str) for v in props.values())
    assert from_properties(props) == meta


def test_collection_without_our_properties_has_no_meta() -> None:
    assert from_properties({"collection.ttl.seconds": "0"}) is None
    assert from_properties(None) is None


def test_broken_meta_is_reported() -> None:
    with pytest.raises(ValueError, match="not valid mmsearch metadata"):
        from_properties({"mmsearch.model_key": "m", "mmsearch.dim": "not a number"})


def test_physical_name_is_alias_and_timestamp() -> None:
    assert physical_name("faq", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "faq__20260102030405"
