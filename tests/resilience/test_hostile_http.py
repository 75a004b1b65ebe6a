"""Hostile input over HTTP, against the local stack's search service (and its web UI for stored HTML):
property-based fuzzing from the OpenAPI schema, huge/empty/binary/mixed-script queries, uploads that are not
images or are decompression bombs, and <script>/HTML in indexed documents returned as data."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.fixtures.stack import LocalStack
from tests.resilience.hostile import png_bomb, png_header_only, small_png
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

FUZZ_EXAMPLES = 30  # per operation and generation mode: bounded, derandomized (same cases every run)
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def http(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.search_url, timeout=TIMEOUT) as client:
        yield client


def test_openapi_fuzzing_never_gets_a_5xx(local_stack: LocalStack) -> None:
    import schemathesis
    from schemathesis.generation import GenerationMode

    from stack.keys import ADMIN, key_file

    # With the local stack's admin key: every route's handler is reached (and its limit is not the fuzzer's).
    admin = key_file(local_stack.plan.keys_dir, ADMIN).read_text(encoding="utf-8").strip()
    headers = {"Authorization": f"Bearer {admin}"}
    schema = schemathesis.openapi.from_url(local_stack.search_url + "/openapi.json")
    statuses: dict[str, Counter[int | str]] = {}
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err would raise here: the schema is ours
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(
                operation,
                mode,
                local_stack.search_url,
                statuses.setdefault(operation.label, Counter()),
                server_errors,
                headers,
            )

    record(
        "fuzz.openapi",
        {
            "tool": "schemathesis (positive and negative generation, derandomized)",
            "examples_per_operation_and_mode": FUZZ_EXAMPLES,
            "operations": len(statuses),
            "requests": sum(v for c in statuses.values() for k, v in c.items() if isinstance(k, int)),
            "server_errors": len(server_errors),
            "statuses": {
                label: {str(k): v for k, v in sorted(c.items(), key=lambda kv: str(kv[0]))}
                for label, c in statuses.items()
            },
            "first_server_errors": server_errors[:5],
        },
    )
    assert len(statuses) >= 5, f"the schema lists only {sorted(statuses)}"
    assert not server_errors, f"{len(server_errors)} fuzzed requests got a 5xx:\n" + "\n".join(server_errors[:5])


def _fuzz(  # noqa: PLR0917 - one fuzzing run's setting
    operation: Any,
    mode: Any,
    base_url: str,
    counts: Counter[int | str],
    server_errors: list[str],
    headers: dict[str, str],
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def exercise(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=TIMEOUT, headers=headers)
        counts[response.status_code] += 1
        if response.status_code >= 500:
            # Keep going: collect every 5xx the fuzzer finds rather than stopping at the first one.
            server_errors.append(
                f"{operation.label} -> {response.status_code}: {response.text[:300]} for {case!r}"[:800]
            )

    try:
        exercise()
    except Unsatisfiable:
        # Nothing to generate in this mode (e.g. no invalid input exists for GET /health): nothing to send.
        counts["unsatisfiable"] += 1


MIXED = "¿Cómo pido una licencia? 建筑许可证 как получить разрешение رخصة البناء 🏗️ e\u0301 \u202eRTL"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("mixed scripts and emoji", {"query": MIXED}, {200}),
        ("only emoji", {"query": "🏗️🧱🔨"}, {200}),
        ("combining marks and zero-width", {"query": "a\u0301\u200b\u200d\ufeffb"}, {200}),
        ("control characters and NUL", {"query": "permit\x00\x01\x1b[31m\x7f"}, {200, 422}),
        ("lone surrogate escape", '{"query": "\\ud800 permit"}', {200, 422}),
        ("empty", {"query": ""}, {422}),
        ("whitespace", {"query": " \t\n\u3000 "}, {422}),
        ("missing query", {}, {422}),
        ("query not a string", {"query": ["a", "b"]}, {422}),
        ("one character over the limit", {"query": "x" * 513}, {422}),
        ("a megabyte", {"query": "permit " * 150_000}, {413, 422}),
        ("binary body", b"\xff\xfe\x00\x81garbage\xc3\x28", {400, 422}),
        ("truncated JSON", b'{"query": "perm', {400, 422}),
        ("deeply nested JSON", "[" * 100_000 + "]" * 100_000, {400, 413, 422}),  # 200 KB: over the body limit
        ("topK absurd", {"query": "permit", "topK": 10**18}, {200, 422}),
        ("filters of the wrong shape", {"query": "permit", "filters": {"category": {"$ne": 1}}}, {422}),
        ("pins without debug", {"query": "permit", "specifiedLayerAndExperiment": {"rank.qa": "nope"}}, {200}),
        (
            "pins to an unknown experiment",
            {"query": "permit", "useDebug": True, "specifiedLayerAndExperiment": {"rank.qa": "<script>"}},
            {200, 422},
        ),
    ],
)
def test_hostile_queries_get_a_precise_4xx_or_an_answer(
    http: httpx.Client, name: str, content: dict[str, Any] | str | bytes, expected: set[int]
) -> None:
    raw = json.dumps(content).encode() if isinstance(content, dict) else content
    reply = http.post("/qa/user/10", content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code in expected, f"{name}: {reply.status_code} {reply.text[:300]}"
    body = reply.json()
    if reply.status_code == 200:
        assert isinstance(body["searchItemModels"], list), body
    else:
        message = json.dumps(body)
        assert len(message) < 20_000, f"{name}: the error echoes the whole input back ({len(message)} bytes)"
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("name", "filename", "data", "content_type", "expected"),
    [
        ("text named .png", "notes.png", b"just some text, not an image\n" * 10, "image/png", {415}),
        ("html upload", "x.html", b"<html><script>alert(1)</script></html>", "text/html", {415}),
        ("empty file", "empty.png", b"", "image/png", {422}),
        ("PNG magic then garbage", "broken.png", png_header_only(), "image/png", {422}),
        ("decompression bomb (20k x 20k PNG)", "bomb.png", png_bomb(), "image/png", {413, 422}),
        ("over the upload limit", "big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (9 * 2**20), "image/png", {413}),
        ("a real small PNG", "ok.png", small_png(), "image/png", {200}),
    ],
)
def test_hostile_uploads_are_refused_precisely(  # noqa: PLR0917 - parametrized cases
    http: httpx.Client,
    local_stack: LocalStack,
    name: str,
    filename: str,
    data: bytes,
    content_type: str,
    expected: set[int],
) -> None:
    if 200 in expected and not local_stack.ready.text_to_image:
        pytest.skip("image search needs the CLIP towers; this stack runs without them")
    reply = http.post("/i2i/user/10", files={"image": (filename, data, content_type)})
    assert reply.status_code in expected, f"{name}: {reply.status_code} {reply.text[:300]}"
    body = reply.json()
    if reply.status_code != 200:
        assert body.get("message"), f"{name}: no message saying what to fix: {body}"
    assert http.get("/health").status_code == 200


HOSTILE_ANSWER = '<script>alert("xss")</script><img src=x onerror="alert(2)"><b>bold</b> &amp; </textarea>'


def test_html_in_indexed_documents_is_returned_as_data(local_stack: LocalStack, http: httpx.Client) -> None:
    from pymongo import MongoClient

    first = http.post("/qa/user/10", json={"query": "building permit", "topK": 1}).json()["searchItemModels"][0][0]
    mongo: MongoClient[dict[str, Any]] = MongoClient(local_stack.ready.mongo_uri)
    coll = mongo["mmsearch"]["faq_qa"]
    original = coll.find_one({"queryid": first["id"]})
    assert original is not None, f"document {first['id']} not in MongoDB"
    try:
        coll.update_one({"queryid": first["id"]}, {"$set": {"answer": HOSTILE_ANSWER}})
        api = http.post("/qa/user/10", json={"query": "building permit", "topK": 1})
        assert api.headers["content-type"].startswith("application/json")
        hit = api.json()["searchItemModels"][0][0]
        assert hit["id"] == first["id"]
        assert hit["summary"]["answer"] == HOSTILE_ANSWER  # verbatim data: no escaping, no stripping, no rendering

        ui = httpx.post(
            local_stack.web_url + "/api/search/qa", json={"query": "building permit", "topK": 1}, timeout=TIMEOUT
        )
        assert ui.status_code == 200, ui.text[:300]
        assert ui.headers["content-type"].startswith("application/json"), "the UI must hand results to the page as data"
        items = ui.json()["items"]
        assert items[0]["answer"] == HOSTILE_ANSWER
        page = httpx.get(local_stack.web_url + "/", timeout=TIMEOUT)
        csp = page.headers.get("content-security-policy", "")
        assert "script-src" in csp, csp
        assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0], csp
    finally:
        coll.replace_one({"_id": original["_id"]}, original)
        mongo.close()
