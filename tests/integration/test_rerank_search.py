"""The cross_encoder rank experiment through the real search service: the demo FAQ in Milvus and SecantusDB, the
tokenizer service and model server serving MiniLM and a cross-encoder (random weights, MiniLM's tokenizer), and
the served order of the reranked items checked against PyTorch's scores of the same (query, answer) pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mmsearch.model_repo import ModelRepository
from offline.export.cross_encoder import export_cross_encoder
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.grpc_services import start_service
from tests.fixtures.models import torch_pair_logits, write_classifier
from tests.fixtures.prometheus import metric_value, scrape
from tests.fixtures.search import AB_CONFIG, FaqCorpus, RunningSearch, Stores, start_search
from tests.fixtures.stack import model_repo_with_minilm

pytestmark = pytest.mark.integration

CE = "tiny-ce"
TOP_N = 12  # pairs of mixed length in one ScorePairs call
QUERY = "how long does a building permit take?"


def _config(timeout_ms: int) -> str:
    doc = yaml.safe_load(AB_CONFIG.read_text(encoding="utf-8"))
    cfg = doc["scene-config"]
    qa = next(s for s in cfg["scenes"] if s["name"] == "questionAnswer")
    rank = next(la for la in qa["layers"] if la["name"] == "rank.qa")
    rank["normalLayerArgs"].append({"experimentName": "rank.qa.ce", "ratio": 0.2})
    args = {
        "rankerName": "cross_encoder",
        "modelName": CE,
        "documentField": "answer",
        "rerankTopN": TOP_N,
        "timeoutMs": timeout_ms,
    }
    cfg["experiments"].append({"layerName": "rank.qa", "experimentName": "rank.qa.ce", "extraExperimentArgs": args})
    return str(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def ce_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("ce-src"), labels=1, seed=21)


@pytest.fixture(scope="module")
def rerank_search(  # noqa: PLR0917 - pytest fixtures take their dependencies as parameters
    model_repo: ModelRepository,
    ce_source: Path,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    consul_kv: ConsulKVDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningSearch]:
    root = model_repo_with_minilm(tmp_path_factory.mktemp("rerank-repo"), model_repo)
    repo = ModelRepository(root)
    export_cross_encoder(str(ce_source), repo, CE)
    logs = tmp_path_factory.mktemp("rerank-logs")
    consul_kv.put("config/test/rerank", _config(timeout_ms=30_000))
    with (
        start_service("tokenizer", root, log_dir=logs, name="rr-tok") as tok,
        start_service("model", root, "--intra-op-threads", "1", log_dir=logs, name="rr-model") as model,
        start_search(
            repo=root,
            tokenizer_target=tok.target,
            model_server_target=model.target,
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key="config/test/rerank",
            work_dir=logs,
            extra_env={"MMSEARCH_SEARCH__STAGE_TIMEOUT_SECONDS": "30"},
        ) as svc,
    ):
        yield svc


def _torch_scores(source: Path, query: str, docs: list[str]) -> np.ndarray:
    logits = torch_pair_logits(source, query, docs)
    return np.asarray(1 / (1 + np.exp(-logits[:, 0])))


def _search(svc: RunningSearch, rank: str, top_k: int = 16) -> dict[str, Any]:
    pins = {"rank.qa": rank, "match.qa": "match.qa.base"}
    status, out = svc.post(
        "/qa/user/42", {"query": QUERY, "useDebug": True, "topK": top_k, "specifiedLayerAndExperiment": pins}
    )
    assert status == 200, out
    return out


def test_the_reranked_order_is_pytorchs_and_the_rest_keep_recalls_order(
    rerank_search: RunningSearch, ce_source: Path
) -> None:
    base = _search(rerank_search, "rank.qa.dummy")["searchItemModels"][0]
    out = _search(rerank_search, "rank.qa.ce")
    assert out["experiments"]["rank.qa"] == "rank.qa.ce"
    assert out["debug"]["fallbacks"] == {}
    items = out["searchItemModels"][0]
    recall_ids = [it["id"] for it in base]
    top = recall_ids[:TOP_N]
    answers = {it["id"]: it["summary"]["answer"] for it in base}
    expected = _torch_scores(ce_source, QUERY, [answers[i] for i in top])
    want = [top[i] for i in sorted(range(TOP_N), key=lambda i: (-expected[i], top[i]))]
    assert [it["id"] for it in items[:TOP_N]] == want
    served = {it["id"]: it["originalRankingScoreMap"]["cross_encoder"] for it in items[:TOP_N]}
    for i, doc_id in enumerate(top):
        assert served[doc_id] == pytest.approx(float(expected[i]), abs=1e-4)
    # Past the first TOP_N: recall's order, below every reranked score.
    assert [it["id"] for it in items[TOP_N:]] == recall_ids[TOP_N:]
    assert max(it["score"] for it in items[TOP_N:]) < min(it["score"] for it in items[:TOP_N])
    # The summary came from the documents the reranker fetched: every item has its question and answer.
    assert all(it["summary"].get("question") and it["summary"].get("answer") for it in items)


def test_past_the_timeout_the_recall_order_is_served_and_said(
    rerank_search: RunningSearch, consul_kv: ConsulKVDouble
) -> None:
    from tests.fixtures.ports import wait_until

    consul_kv.put("config/test/rerank", _config(timeout_ms=1))
    wait_until(
        lambda: bool(_search(rerank_search, "rank.qa.ce")["debug"]["fallbacks"]),
        what="the 1 ms timeout config applied",
        timeout=30,
    )
    base = _search(rerank_search, "rank.qa.dummy")["searchItemModels"][0]
    out = _search(rerank_search, "rank.qa.ce")
    assert "cross_encoder took over 1 ms: recall order kept" in out["debug"]["fallbacks"]["rank.qa"]
    assert [it["id"] for it in out["searchItemModels"][0]] == [it["id"] for it in base]
    text = scrape(rerank_search.url + "/metrics")
    assert metric_value(text, "mmsearch_search_rank_fallbacks_total", experiment="rank.qa.ce") >= 1
    consul_kv.put("config/test/rerank", _config(timeout_ms=30_000))
    wait_until(
        lambda: not _search(rerank_search, "rank.qa.ce")["debug"]["fallbacks"],
        what="the 30 s timeout config applied again",
        timeout=30,
    )


def test_eval_compares_the_rerank_experiment_with_no_rerank(rerank_search: RunningSearch, tmp_path: Path) -> None:
    """The comparison runs end to end; with random weights its numbers say nothing about rerank quality."""
    import json

    from click.testing import CliRunner

    from mmsearch.cli.main import cli
    from offline.eval.judged import FAQ_QUERIES

    qrels = tmp_path / "q.jsonl"
    qrels.write_text("".join(FAQ_QUERIES.read_text(encoding="utf-8").splitlines(keepends=True)[:15]))
    out = tmp_path / "rerank.json"
    result = CliRunner().invoke(
        cli,
        [
            *("eval", "--search-url", rerank_search.url, "--qrels", str(qrels), "--layer", "rank.qa"),
            *("--experiments", "rank.qa.dummy,rank.qa.ce", "--pin", "match.qa=match.qa.base", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["layer"] == "rank.qa"
    assert list(report["experiments"]) == ["rank.qa.dummy", "rank.qa.ce"]
    assert report["experiments"]["rank.qa.ce"]["failed"] == 0
    assert set(report["comparisons"]["rank.qa.ce"]) >= {"mrr@10", "ndcg@10"}
