"""`mmsearch eval` against the real search service (milvus-lite server, the FAQ ingested with its lexical field,
the demo A/B config): the report's contract, the HTML page, and the errors that list the valid names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli
from offline.eval.judged import FAQ_QUERIES
from tests.fixtures.search import RunningSearch, Stores

pytestmark = pytest.mark.integration


@pytest.fixture
def qrels(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(FAQ_QUERIES.read_text(encoding="utf-8").splitlines(keepends=True)[:40]))
    return path


def _eval(search: RunningSearch, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["eval", "--search-url", search.url, *args])
    return result.exit_code, result.output


def test_eval_compares_the_layers_experiments(
    search_service: RunningSearch, search_stores: Stores, qrels: Path, tmp_path: Path
) -> None:
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    code, output = _eval(
        search_service,
        *("--qrels", str(qrels), "--layer", "match.qa", "--pin", "rank.qa=rank.qa.dummy"),
        *("--mongo-uri", search_stores.mongo_uri),
        *("--out", str(out), "--html", str(page), "--seed", "7"),
    )
    assert code == 0, output
    report = json.loads(out.read_text())
    assert (report["scene"], report["layer"], report["queries"], report["k"]) == (
        "questionAnswer",
        "match.qa",
        40,
        [1, 5, 10],
    )
    assert list(report["experiments"]) == ["match.qa.base", "match.qa.hybrid", "match.qa.weighted"]
    for name, data in report["experiments"].items():
        assert data["failed"] == 0, name
        assert 0 <= data["recall"]["1"] <= data["recall"]["5"] <= data["recall"]["10"] <= 1
        assert 0 <= data["mrr@10"] <= 1
        assert 0 <= data["ndcg@10"] <= 1
        assert data["latency_ms"]["p50"] > 0
    assert report["corpus"] == {
        "judged_ids": 40,
        "judged_ids_not_in_corpus": 0,
        "queries_unfindable": 0,
        "examples": [],
    }
    assert set(report["comparisons"]) == {"match.qa.hybrid", "match.qa.weighted"}
    for metric in report["comparisons"]["match.qa.hybrid"].values():
        lo, hi = metric["ci"]
        assert lo <= metric["diff"] <= hi
        assert 0 < metric["p"] <= 1
    # The same seed gives the same report (the service is deterministic for pinned experiments).
    again = tmp_path / "again.json"
    assert _eval(search_service, "--qrels", str(qrels), "--pin", "rank.qa=rank.qa.dummy", "--out", str(again),
                 "--seed", "7")[0] == 0  # fmt: skip
    assert json.loads(again.read_text())["comparisons"] == report["comparisons"]
    html = page.read_text()
    assert html.startswith("<!doctype html>")
    assert "<script" not in html
    assert html.count("<svg") == 5  # one chart per metric: recall@1, @5, @10, mrr@10, ndcg@10
    assert "match.qa.hybrid: R@1" in output


def test_judged_ids_the_corpus_lacks_are_counted_and_scored_as_misses(
    search_service: RunningSearch, search_stores: Stores, qrels: Path, tmp_path: Path
) -> None:
    rows = qrels.read_text().splitlines()[:6]
    rows.append(json.dumps({"query": "building permit", "relevant": {"no-such-doc": 1}}))
    rows.append(json.dumps({"query": "fire safety", "relevant": {"1": 1, "also-missing": 2}}))
    qrels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    code, output = _eval(
        search_service,
        *("--qrels", str(qrels), "--experiments", "match.qa.base", "--out", str(out)),
        *("--mongo-uri", search_stores.mongo_uri),
    )
    assert code == 0, output
    report = json.loads(out.read_text())
    assert report["queries"] == 8  # kept and scored, never dropped
    corpus = report["corpus"]
    assert (corpus["judged_ids"], corpus["judged_ids_not_in_corpus"], corpus["queries_unfindable"]) == (8, 2, 1)
    assert corpus["examples"] == ["also-missing", "no-such-doc"]
    assert "2 of 8 judged ids are not in the corpus" in " ".join(output.split())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--scene", "nope"),
            "unknown scene 'nope'; the service has chitchat, documents, imageToImage, questionAnswer, textToImage",
        ),
        (("--layer", "match.zz"), "unknown layer 'match.zz' in scene 'questionAnswer'; it has qp.qa, match.qa"),
        (("--experiments", "match.qa.base,match.qa.v9"), "unknown experiment(s) match.qa.v9 in layer 'match.qa'"),
        (("--pin", "rank.qa=rank.qa.xgboost"), "--pin 'rank.qa=rank.qa.xgboost': give LAYER=EXPERIMENT"),
        (("--k", "0,5"), "give whole numbers >= 1"),
    ],
)
def test_bad_names_are_refused_with_the_valid_ones(
    search_service: RunningSearch, qrels: Path, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    out = tmp_path / "r.json"
    code, output = _eval(search_service, "--qrels", str(qrels), "--out", str(out), *args)
    assert code != 0
    assert says in " ".join(output.split())
    assert not out.exists()  # nothing half-written
