"""The applier's plan for a batch of journal entries: the last write per document wins, versions are checked
against what was applied before and earlier in the batch, a replayed version is a no-op."""

from __future__ import annotations

from mmsearch.collection_meta import CollectionMeta
from services.search.documents.applier import misfits, plan_batch
from services.search.documents.journal import Entry, Op
from services.search.documents.schema import CorpusSchema, FieldSpec


def _e(seq: int, doc: int, op: Op = "upsert", version: int | None = None) -> Entry:
    return Entry(seq, "c", doc, op, version, "pending", {"question": f"q{seq}"} if op == "upsert" else None, [0.0])


def test_the_last_write_to_a_document_wins_and_every_entry_is_accounted_for() -> None:
    plan = plan_batch([_e(1, 7), _e(2, 8), _e(3, 7, "delete"), _e(4, 8)], {})
    assert [e.seq for e in plan.upserts] == [4]
    assert plan.deletes == [7]
    assert plan.applied == [1, 2, 3, 4]
    assert plan.stale == []


def test_an_older_version_goes_stale_against_the_applied_one_and_against_the_batch() -> None:
    plan = plan_batch([_e(1, 7, version=5), _e(2, 7, version=4), _e(3, 9, version=2)], {9: 3})
    assert [e.seq for e in plan.upserts] == [1]
    assert [seq for seq, _ in plan.stale] == [2, 3]
    assert "older than version 5" in plan.stale[0][1]
    assert "older than version 3" in plan.stale[1][1]


def test_a_replayed_version_changes_nothing() -> None:
    plan = plan_batch([_e(1, 7, version=3)], {7: 3})
    assert plan.upserts == []
    assert plan.deletes == []
    assert plan.applied == [1]


def test_a_versioned_delete_keeps_older_upserts_out() -> None:
    plan = plan_batch([_e(1, 7, "delete", version=4), _e(2, 7, version=3)], {})
    assert plan.deletes == [7]
    assert plan.upserts == []
    assert [seq for seq, _ in plan.stale] == [2]


def test_an_unversioned_write_after_a_versioned_one_wins() -> None:
    plan = plan_batch([_e(1, 7, version=9), _e(2, 7)], {})
    assert [e.seq for e in plan.upserts] == [2]


def test_upserts_the_rebuilt_collection_cannot_hold_are_refused_with_the_reason_and_the_rest_go_on() -> None:
    # The corpus was rebuilt between accept and apply: it now filters on an integer `year` and keeps BM25 text of
    # at most 10 bytes of `question`.
    meta = CollectionMeta(
        model_key="minilm", dim=1, vector_field="question_emb", metric="IP", index_type="FLAT", corpus="c", count=1
    )
    schema = CorpusSchema(
        "c", meta, scalars=(FieldSpec("year", "int64"),), lexical=(FieldSpec("question", "varchar", max_length=10),)
    )

    def upsert(seq: int, fields: dict[str, object]) -> Entry:
        return Entry(seq, "c", seq, "upsert", None, "pending", fields, [0.0])

    entries = [
        upsert(1, {"question": "short", "year": 2020}),
        upsert(2, {"question": "short"}),  # no year: the new collection needs one
        upsert(3, {"question": "much longer than ten bytes", "year": 2021}),
        Entry(4, "c", 9, "delete", None, "pending"),
    ]
    refused = misfits(entries, schema)
    assert sorted(refused) == [2, 3]
    assert "'year' is missing" in refused[2]
    assert "at most 10" in refused[3]
    assert all(r.startswith("the corpus was rebuilt with other fields") for r in refused.values())
