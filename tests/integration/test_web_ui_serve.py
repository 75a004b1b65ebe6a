"""`mmsearch serve web` as a real process under waitress: the page, its headers, and readable errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.browser.support import start_web_ui
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"MMSEARCH_WEB__MAX_UPLOAD_MB": "1"}
    # Nothing listens on the search URL: every search is "search service down".
    with (
        start_web_ui(f"http://127.0.0.1:{free_port()}", tmp_path_factory.mktemp("serve-web"), extra_env=env) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def test_serves_the_page_with_security_headers(web: httpx.Client) -> None:
    response = web.get("/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Server"] == "mmsearch-web"
    assert '<script src="/static/app.js" defer></script>' in response.text


def test_search_with_the_service_down_is_a_json_503(web: httpx.Client) -> None:
    response = web.post("/api/search/qa", json={"query": "permit"})
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert "cannot be reached" in response.json()["error"]["message"]


@pytest.mark.parametrize("megabytes", [1.2, 1.9])
def test_upload_over_the_limit_is_a_json_413_through_waitress(web: httpx.Client, megabytes: float) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + b"\x00" * int(megabytes * 1024 * 1024)
    response = web.post("/api/search/i2i", files={"image": ("big.png", photo, "image/png")})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_the_stack_start_up_probe_reports_why_the_ui_cannot_search(web: httpx.Client) -> None:
    from stack.probes import web_ui_search_problem

    problem = web_ui_search_problem(str(web.base_url).rstrip("/"))
    assert problem is not None
    assert "cannot be reached" in problem, problem
    assert web_ui_search_problem(f"http://127.0.0.1:{free_port()}") is not None  # no web UI at all
