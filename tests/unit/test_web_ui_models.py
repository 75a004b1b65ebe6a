"""The web UI's boundary models: the search service's answer parsed and flattened for the page, data passed
through as plain strings (the page renders it as text), and only safe image URLs kept."""

from __future__ import annotations

import json

import httpx
import pytest

from web_ui.models import SearchResponse, result_view, safe_image_url
from web_ui.scenes import scene_states
from web_ui.search_client import CLIP_HINT, SearchClient

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>\nsecond line'


def _answer(items: list[dict[str, object]], **extra: object) -> SearchResponse:
    body = {"queryModel": {"query": "q"}, "searchItemModels": [items], **extra}
    return SearchResponse.model_validate_json(json.dumps(body))


def test_qa_item_text_passes_through_unchanged_for_the_page_to_render_as_text() -> None:
    answer = _answer(
        [
            {
                "id": "823067",
                "score": 3.99,
                "finalRetrievalScore": 3.99,
                "finalRankingScore": 3.99,
                "originalRetrievalScoreMap": {"ann_matcher": 0.98},
                "originalRankingScoreMap": {"dummy": 3.99},
                "summary": {"question": "Q <b>bold</b>?", "answer": HOSTILE, "category": ["a<b", "c"]},
            }
        ],
        experiments={"match.qa": "match.qa.base"},
        debug={"stageMs": {"qp.qa": 1.5, "match.qa": 7.25}, "totalMs": 9.0, "configDigest": "x", "configOrigin": "f"},
    )
    view = result_view("qa", "q", "u1", answer, ui_ms=12.345)
    item = view.items[0]
    # Not escaped here: JSON carries the literal text, the page puts it in textContent (line breaks kept by CSS).
    assert item.answer == HOSTILE
    assert item.question == "Q <b>bold</b>?"
    assert item.category == ["a<b", "c"]
    assert item.score == pytest.approx(3.99)
    assert item.retrievalScores == {"ann_matcher": pytest.approx(0.98)}
    assert view.experiments == {"match.qa": "match.qa.base"}
    assert view.timings == {"qp.qa": 1.5, "match.qa": 7.25}
    assert view.totalMs == 9.0
    assert view.uiMs == 12.3


def test_missing_summary_is_flagged_not_an_error() -> None:
    view = result_view("qa", "q", "u1", _answer([{"id": 5, "score": 1.0, "summary": {}}]), ui_ms=1)
    assert view.items[0].id == "5"
    assert view.items[0].missingSummary is True
    assert view.experiments == {}
    assert view.timings == {}


def test_empty_result_list() -> None:
    assert result_view("t2i", "q", "u", _answer([]), ui_ms=1).items == []
    assert SearchResponse.model_validate({"queryModel": {}, "searchItemModels": []}).items() == []


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://127.0.0.1:8090/images/cat.png", True),
        ("https://cdn.example.org/a b.jpg", True),
        ("/images/cat.png", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("data:image/svg+xml,<svg onload=alert(1)>", False),
        ("//evil.example/x.png", False),
        ("/\\evil.example/x.png", False),
        ("ftp://host/x.png", False),
        ("images/relative.png", False),
        ("http://", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_only_http_https_or_same_origin_image_urls_are_kept(url: object, kept: bool) -> None:
    assert safe_image_url(url) == (url if kept else None)


def test_image_item_with_a_javascript_url_loses_the_url_keeps_the_name() -> None:
    answer = _answer([{"id": "1", "score": 0.5, "summary": {"name": "<b>cat</b>", "url": "javascript:alert(1)"}}])
    item = result_view("t2i", "cat", "u", answer, ui_ms=1).items[0]
    assert item.name == "<b>cat</b>"
    assert item.url is None


def _client() -> SearchClient:
    return SearchClient("http://127.0.0.1:1", timeout_seconds=1)


def test_scene_disabled_answer_becomes_not_configured_with_the_clip_hint() -> None:
    response = httpx.Response(
        503, json={"error": "scene_disabled", "message": "textToImage is disabled: no CLIP model 'clip_text'."}
    )
    error = _client()._service_error("t2i", response)
    assert error.status == 503
    assert error.code == "not_configured"
    assert "no CLIP model" in error.message
    assert error.hint == CLIP_HINT
    assert "mmsearch export clip --source <hub id|folder> --key clip" in CLIP_HINT


def test_dependency_down_is_503_naming_it() -> None:
    response = httpx.Response(
        503, json={"error": "dependency_unavailable", "message": "milvus unavailable: timeout", "dependency": "milvus"}
    )
    error = _client()._service_error("qa", response)
    assert (error.status, error.code) == (503, "unavailable")
    assert "milvus unavailable" in error.message


def test_invalid_query_keeps_the_services_reason() -> None:
    response = httpx.Response(422, json={"error": "invalid_query", "message": "query is longer than 512 characters"})
    error = _client()._service_error("qa", response)
    assert (error.status, error.code) == (422, "rejected")
    assert error.message == "query is longer than 512 characters"


def test_request_validation_errors_pass_through_readably() -> None:
    # The search service answers request validation in its one error shape too (no FastAPI {"detail": [...]}).
    body = {"error": "invalid_request", "message": "query is required (in the body)", "dependency": None}
    error = _client()._service_error("qa", httpx.Response(422, json=body))
    assert error.message == "query is required (in the body)"


def test_a_500_with_html_is_a_502_without_the_html_page() -> None:
    error = _client()._service_error("qa", httpx.Response(500, text="<html>Internal Server Error</html>"))
    assert error.status == 502
    assert error.code == "bad_gateway"


def test_scene_states_from_ready() -> None:
    states = scene_states(
        {
            "ready": True,
            "scenes": {
                "questionAnswer": {"enabled": True},
                "textToImage": {"enabled": False, "reason": "no CLIP model in the repository"},
            },
        }
    )
    assert states["qa"] == {"enabled": True}
    assert states["t2i"] == {"enabled": False, "message": "no CLIP model in the repository"}
    assert states["i2i"] == states["t2i"]
    assert scene_states({"ready": False}) == {}


def test_scene_states_from_the_search_services_config_block() -> None:
    ready = {
        "ready": True,
        "config": {
            "scenes": {
                "questionAnswer": "enabled",
                "textToImage": "model 'clip-text' is not in the model repository: run mmsearch export clip",
                "imageToImage": "enabled",
            }
        },
    }
    states = scene_states(ready)
    assert states["qa"] == {"enabled": True}
    assert states["t2i"]["enabled"] is False
    assert "mmsearch export clip" in states["t2i"]["message"]
    assert states["i2i"] == {"enabled": True}
