"""The web UI's routes through Flask's test client: security headers, the page, upload limits, readable errors
when the search service is unreachable or hangs, and the local photo folder."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mmsearch.settings import Settings, WebSettings
from tests.fixtures.ports import free_port
from web_ui.app import create_app

STATIC = Path(__file__).resolve().parents[2] / "web_ui" / "static"
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _app(**web: object) -> Flask:
    # Nothing listens on a fresh free loopback port: the search service is "down" unless a test says otherwise.
    web.setdefault("search_url", f"http://127.0.0.1:{free_port()}")
    app = create_app(Settings(web=WebSettings.model_validate(web)))
    app.testing = True
    return app


@pytest.fixture
def client() -> FlaskClient:
    return _app().test_client()


# --- headers and the page ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/app.js", "/health"])
def test_every_response_has_strict_security_headers(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    response.close()  # static files are streamed from an open file
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_page_has_no_inline_script_or_style_and_no_hard_coded_urls(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts, "the page loads its script"
    assert all(body.strip() == "" for body in scripts), "inline script would be blocked by the CSP"
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"\bon[a-z]+=", html), "no inline event handlers"
    assert "http://" not in html
    assert "https://" not in html


def test_page_gives_a_new_visitor_a_user_id_cookie_and_shows_it(client: FlaskClient) -> None:
    response = client.get("/")
    cookie = response.headers["Set-Cookie"]
    user_id = re.match(r"mmsearch_user=([^;]+);", cookie)
    assert user_id is not None
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert f'value="{user_id.group(1)}"' in response.get_data(as_text=True)


def test_page_keeps_the_user_id_from_the_cookie(client: FlaskClient) -> None:
    client.set_cookie("mmsearch_user", "alice-42")
    html = client.get("/").get_data(as_text=True)
    assert 'id="user-id" name="userId" value="alice-42"' in html


def test_a_hostile_cookie_is_replaced_not_rendered(client: FlaskClient) -> None:
    client.set_cookie("mmsearch_user", '"><script>alert(1)</script>')
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in html
    assert re.search(r'id="user-id" name="userId" value="web-[0-9a-f]{8}"', html)


def test_set_user_checks_the_id_and_sets_the_cookie(client: FlaskClient) -> None:
    ok = client.post("/api/user", json={"userId": "bob_7"})
    assert ok.status_code == 200
    assert "mmsearch_user=bob_7;" in ok.headers["Set-Cookie"]
    bad = client.post("/api/user", json={"userId": "bob <7>"})
    assert bad.status_code == 400
    assert "user id" in bad.get_json()["error"]["message"]


def test_page_script_never_writes_html_from_data() -> None:
    """All data goes through textContent/attributes; the CSP blocks inline code even if that ever slipped."""
    source = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, f"app.js uses {sink}"
    assert "textContent" in source


# --- the search service is down, hangs, or the scene is unknown -------------------------------------


@pytest.mark.parametrize("scene", ["qa", "t2i"])
def test_unreachable_search_service_is_a_readable_503(client: FlaskClient, scene: str) -> None:
    response = client.post(f"/api/search/{scene}", json={"query": "how do I get a permit?"})
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == "unreachable"
    assert "search service cannot be reached" in error["message"]
    assert "MMSEARCH_WEB__SEARCH_URL" in error["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unreachable_search_service_for_an_upload_is_a_readable_503(client: FlaskClient) -> None:
    data = {"image": (io.BytesIO(PNG_HEAD), "cat.png"), "userId": "u1"}
    response = client.post("/api/search/i2i", data=data, content_type="multipart/form-data")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unreachable"


def test_status_says_the_search_service_is_unreachable(client: FlaskClient) -> None:
    response = client.get("/api/status")
    assert response.status_code == 200
    body = response.get_json()
    assert body["search"]["reachable"] is False
    assert "cannot be reached" in body["search"]["message"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A real socket that accepts connections and never answers: a hung search service."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_a_hung_search_service_times_out_with_504(silent_server: int) -> None:
    client = _app(search_url=f"http://127.0.0.1:{silent_server}", request_timeout_seconds=0.3).test_client()
    response = client.post("/api/search/qa", json={"query": "anything"})
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "timeout"
    assert "did not answer within 0.3 seconds" in error["message"]


def test_page_client_timeout_is_a_little_longer_than_the_server_timeout() -> None:
    client = _app(request_timeout_seconds=7).test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'data-client-timeout-ms="12000"' in html


def test_unknown_scene_is_404_json(client: FlaskClient) -> None:
    response = client.post("/api/search/nope", json={"query": "x"})
    assert response.status_code == 404
    assert "use qa, t2i, i2i or doc" in response.get_json()["error"]["message"]


def test_unknown_api_path_is_json_not_html(client: FlaskClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "http_error"


# --- bad input is refused before the search service is called ---------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"query": "   "}, "type something"),
        ({"query": "x" * 513}, "at most 512"),
        ({"query": "ok", "userId": "no spaces allowed"}, "user id"),
        ({"query": "ok", "topK": 0}, "topK"),
        ({"query": "ok", "offset": -1}, "offset"),
        ({"query": "ok", "offset": 5000}, "offset"),
        ({"query": "ok", "unexpected": 1}, "unexpected"),
    ],
)
def test_bad_search_requests_are_400_with_the_reason(
    client: FlaskClient, body: dict[str, object], fragment: str
) -> None:
    response = client.post("/api/search/qa", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]["message"]


_FEEDBACK = {"requestId": "r1", "userId": "u1", "itemId": "7", "event": "click"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**_FEEDBACK, "event": "purchase"}, "event"),
        ({**_FEEDBACK, "userId": "no spaces allowed"}, "user id"),
        ({k: v for k, v in _FEEDBACK.items() if k != "itemId"}, "itemId"),
        ({**_FEEDBACK, "extra": 1}, "extra"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_feedback_is_400_with_the_reason(client: FlaskClient, body: object, fragment: str) -> None:
    response = client.post("/api/feedback", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]["message"]


def test_feedback_with_the_search_service_down_is_a_readable_503(client: FlaskClient) -> None:
    response = client.post("/api/feedback", json=_FEEDBACK)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unreachable"


def test_search_needs_a_json_body(client: FlaskClient) -> None:
    response = client.post("/api/search/qa", data="query=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "JSON object" in response.get_json()["error"]["message"]


def test_upload_larger_than_the_limit_is_413() -> None:
    client = _app(max_upload_mb=1).test_client()
    big = PNG_HEAD + b"\x00" * (1024 * 1024)
    # The test client spools a large body to a temporary file; it closes it with the response only on its
    # follow_redirects path (there is no redirect here).
    with client.post(
        "/api/search/i2i",
        data={"image": (io.BytesIO(big), "big.png")},
        content_type="multipart/form-data",
        follow_redirects=True,
    ) as response:
        assert response.status_code == 413
        assert "larger than 1 MB" in response.get_json()["error"]["message"]


def test_request_body_far_over_the_limit_is_413_before_parsing() -> None:
    client = _app(max_upload_mb=1).test_client()
    huge = PNG_HEAD + b"\x00" * (3 * 1024 * 1024)
    with client.post(
        "/api/search/i2i",
        data={"image": (io.BytesIO(huge), "huge.png")},
        content_type="multipart/form-data",
        follow_redirects=True,
    ) as response:
        assert response.status_code == 413
        assert response.get_json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "payload",
    [b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", b"%PDF-1.7 not a photo", b"MZ\x90"],
)
def test_upload_that_is_not_a_photo_is_415_whatever_its_name(client: FlaskClient, payload: bytes) -> None:
    response = client.post(
        "/api/search/i2i", data={"image": (io.BytesIO(payload), "cat.jpg")}, content_type="multipart/form-data"
    )
    assert response.status_code == 415
    assert "JPEG, PNG, GIF or WebP" in response.get_json()["error"]["message"]


def test_upload_without_a_file_is_400(client: FlaskClient) -> None:
    response = client.post("/api/search/i2i", data={"userId": "u1"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Choose a photo" in response.get_json()["error"]["message"]


def test_upload_with_bad_pins_is_400(client: FlaskClient) -> None:
    data = {"image": (io.BytesIO(PNG_HEAD), "a.png"), "debug": "true", "pins": "[1, 2]"}
    response = client.post("/api/search/i2i", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "pins" in response.get_json()["error"]["message"]


# --- the local photo folder -------------------------------------------------------------------------


@pytest.fixture
def photo_client(tmp_path: Path) -> FlaskClient:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(PNG_HEAD)
    (photos / "notes.txt").write_text("not a photo")
    (tmp_path / "secret.png").write_bytes(PNG_HEAD)
    return _app(image_dir=str(photos)).test_client()


def test_photos_are_served_from_the_image_dir(photo_client: FlaskClient) -> None:
    with photo_client.get("/images/cat.png") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.data == PNG_HEAD
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/images/../secret.png", "/images/%2e%2e/secret.png", "/images/notes.txt",
                                  "/images/missing.png", "/images//etc/passwd.png"])  # fmt: skip
def test_photo_paths_outside_the_folder_or_not_photos_are_404(photo_client: FlaskClient, path: str) -> None:
    # Werkzeug first redirects "//" to "/" within this origin; what it lands on is still refused.
    with photo_client.get(path, follow_redirects=True) as response:
        assert response.status_code == 404


def test_no_image_dir_means_no_photos(client: FlaskClient) -> None:
    assert client.get("/images/cat.png").status_code == 404
