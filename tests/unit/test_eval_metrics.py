"""Offline evaluation's building blocks: metrics against values computed by hand on a tiny judged set, seeded
paired statistics, and judged-query files with their errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from offline.eval.metrics import mrr_at, ndcg_at, query_metrics, recall_at
from offline.eval.qrels import QrelsError, read_jsonl, read_trec
from offline.eval.stats import compare, paired_bootstrap, randomization_p

RANKED = ["a", "b", "c", "d"]
RELEVANT = {"b": 2, "d": 1, "x": 0}  # x: judged, not relevant


def test_metrics_by_hand() -> None:
    assert recall_at(RANKED, RELEVANT, 1) == 0.0
    assert recall_at(RANKED, RELEVANT, 2) == 0.5
    assert recall_at(RANKED, RELEVANT, 4) == 1.0
    assert mrr_at(RANKED, RELEVANT) == 0.5
    assert mrr_at(["a", "c"], RELEVANT) == 0.0
    # DCG = (2^2-1)/log2(3) + (2^1-1)/log2(5); ideal = (2^2-1)/log2(2) + (2^1-1)/log2(3).
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    ideal = 3 / 1 + 1 / math.log2(3)
    assert ndcg_at(RANKED, RELEVANT) == pytest.approx(dcg / ideal)
    assert ndcg_at(["b", "d"], RELEVANT) == pytest.approx(1.0)
    assert query_metrics(RANKED, RELEVANT, [1, 2]) == {
        "recall@1": 0.0,
        "recall@2": 0.5,
        "mrr@10": 0.5,
        "ndcg@10": pytest.approx(dcg / ideal),
    }
    with pytest.raises(ValueError, match="relevant"):
        recall_at(RANKED, {"x": 0}, 1)


def test_bootstrap_is_deterministic_and_brackets_the_mean() -> None:
    diffs = [0.5, 0.0, 1.0, -0.5, 0.25, 0.75, 0.0, 0.5]
    ci = paired_bootstrap(diffs, seed=3)
    assert ci == paired_bootstrap(diffs, seed=3)  # the same seed, the same interval
    mean = sum(diffs) / len(diffs)
    assert ci[0] < mean < ci[1]
    assert paired_bootstrap([0.0] * 5) == [0.0, 0.0]


def test_randomization_p() -> None:
    # Ten queries all better by 1: the exact sign-flip p is 2 / 2^10 = 0.00195; the estimate is close and small.
    p = randomization_p([1.0] * 10, seed=1)
    assert p == randomization_p([1.0] * 10, seed=1)
    assert 0.0005 < p < 0.01
    assert randomization_p([0.0] * 10) == 1.0  # no difference at all
    assert randomization_p([1.0, -1.0] * 5) > 0.9  # differences that cancel out


def test_compare_is_other_minus_base() -> None:
    out = compare([0.0, 0.5, 1.0, 0.0], [1.0, 0.5, 1.0, 1.0], seed=0)
    assert out["diff"] == pytest.approx(0.5)
    assert out["ci"][0] <= 0.5 <= out["ci"][1]
    assert 0 < out["p"] <= 1
    with pytest.raises(ValueError, match="same queries"):
        compare([1.0], [1.0, 0.0])


def test_jsonl_qrels_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "q.jsonl"
    good.write_text('{"query": "permit", "relevant": {"1": 2, "7": 0}}\n\n{"query": "roof", "relevant": {"3": 1}}\n')
    judged = read_jsonl(good)
    assert [(j.query, j.relevant) for j in judged] == [("permit", {"1": 2, "7": 0}), ("roof", {"3": 1})]
    for text, says in [
        ('{"query": "x", "relevant": {"1": 0}}', "line 1: not a judged query (relevant: Value error, at least one"),
        ('{"query": "x", "relevant": {"1": -1}}', "negative grade for 1"),
        ('{"query": "", "relevant": {"1": 1}}\n', "line 1: not a judged query (query:"),
        ("not json", "line 1: not a judged query"),
        ("", "holds no judged queries"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(QrelsError) as info:
            read_jsonl(bad)
        assert says in str(info.value)
    with pytest.raises(QrelsError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_trec_qrels_with_a_topics_file(tmp_path: Path) -> None:
    qrels, topics = tmp_path / "qrels.txt", tmp_path / "topics.tsv"
    topics.write_text("q1\thow long does a permit take\nq2\tgarage roof\n")
    qrels.write_text("q1 0 12 2\nq1 0 13 0\nq2 0 40 1\n")
    judged = read_trec(qrels, topics)
    assert [(j.query, j.relevant) for j in judged] == [
        ("how long does a permit take", {"12": 2, "13": 0}),
        ("garage roof", {"40": 1}),
    ]
    qrels.write_text("q1 0 12 2\nq3 0 1 1\n")
    with pytest.raises(QrelsError, match="line 2: query 'q3' has no text"):
        read_trec(qrels, topics)
    qrels.write_text("q1 0 12 2\n")
    with pytest.raises(QrelsError, match="1 topics have no judgements"):
        read_trec(qrels, topics)
    qrels.write_text("q1 12\n")
    with pytest.raises(QrelsError, match="line 1: expected '<qid> <iteration> <doc id> <grade>'"):
        read_trec(qrels, topics)


def test_the_shipped_faq_judgements_are_current() -> None:
    """data/judged/faq/queries.jsonl is exactly what its stated rule gives (see its README)."""
    from offline.eval.judged import FAQ_QUERIES, faq_answer_queries

    shipped = [json.loads(line) for line in FAQ_QUERIES.read_text(encoding="utf-8").splitlines()]
    assert shipped == faq_answer_queries()
    assert len(shipped) == 465
    assert all(len(q["relevant"]) == 1 and 20 <= len(q["query"]) <= 200 for q in shipped)


def test_the_shipped_chatterbot_judgements_are_current() -> None:
    """data/judged/chatterbot/queries.jsonl is exactly what its stated rule gives (see its README)."""
    from offline.eval.judged import CHATTERBOT_QUERIES, chatterbot_reply_queries

    shipped = [json.loads(line) for line in CHATTERBOT_QUERIES.read_text(encoding="utf-8").splitlines()]
    assert shipped == chatterbot_reply_queries()
    assert len(shipped) == 936
    assert all(15 <= len(q["query"]) <= 200 and q["relevant"] for q in shipped)
    assert len({q["query"] for q in shipped}) == len(shipped)  # every reply judges one utterance


def test_beir_queries_and_qrels(tmp_path: Path) -> None:
    """A BEIR queries.jsonl lists every query; the judged ones (by the qrels) are kept, the others left out."""
    qrels, topics = tmp_path / "qrels.tsv", tmp_path / "queries.jsonl"
    topics.write_text(
        '{"_id": "1", "text": "dewey decimal"}\n{"id": "2", "text": "unjudged"}\n{"_id": "3", "text": "x"}\n'
    )
    qrels.write_text("query-id\tcorpus-id\tscore\n1\t28\t1\n3\t5\t2\n")
    assert [(j.query, j.relevant) for j in read_trec(qrels, topics)] == [("dewey decimal", {"28": 1}), ("x", {"5": 2})]
    qrels.write_text("1 0 28 1\n")  # TREC qrels with BEIR queries
    assert [j.query for j in read_trec(qrels, topics)] == ["dewey decimal"]
    topics.write_text('{"text": "no id"}\n')
    with pytest.raises(QrelsError, match="line 1: expected a query"):
        read_trec(qrels, topics)
