"""The web UI's app factory: one page (static HTML, JS and CSS) and a few JSON endpoints that proxy to the
search service.

The browser only ever talks to this origin (CSP connect-src 'self'); this process talks to the search
service over HTTP and holds no search logic. Routes live in web_ui/routes.py, the HTTP client in
web_ui/search_client.py, the response headers in web_ui/security.py.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mmsearch.api_keys import ApiKey, KeyFormatError
from mmsearch.settings import Settings, WebSettings, load_settings
from web_ui.routes import MULTIPART_SLACK_BYTES, UiState, api_error, bp
from web_ui.search_client import SearchClient
from web_ui.security import add_security_headers, content_security_policy

log = logging.getLogger(__name__)

__all__ = ["MULTIPART_SLACK_BYTES", "create_app"]


class ApiKeyError(RuntimeError):
    pass


def ui_api_key(web: WebSettings) -> ApiKey | None:
    """The UI's key for the search service, from web.api_key_file (wins) or web.api_key; None: no key."""
    if web.api_key_file is not None:
        try:
            text = web.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiKeyError(f"cannot read web.api_key_file {web.api_key_file}: {exc.strerror}") from exc
        where = f"web.api_key_file {web.api_key_file}"
    elif web.api_key is not None and web.api_key.get_secret_value().strip():
        text, where = web.api_key.get_secret_value().strip(), "web.api_key"
    else:
        return None
    try:
        return ApiKey.parse(text)
    except KeyFormatError as exc:
        raise ApiKeyError(f"{where} does not hold an mmsearch API key ({exc})") from exc


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    web = settings.web
    app = Flask(__name__)
    api_key = ui_api_key(web)
    client = SearchClient(
        web.search_url, timeout_seconds=web.request_timeout_seconds, api_key=str(api_key) if api_key else None
    )
    state = UiState.from_settings(web, client)
    app.extensions["mmsearch_ui"] = state
    # Werkzeug refuses bodies over this before parsing them; the photo's own limit is checked exactly later.
    app.config["MAX_CONTENT_LENGTH"] = state.max_upload_bytes + MULTIPART_SLACK_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(bp)
    if state.image_dir is not None and not state.image_dir.is_dir():
        log.warning("web.image_dir %s is not a folder: /images/ will answer 404", state.image_dir)
    log.info(
        "web UI: search service %s (%s), timeout %.1fs, photos %s",
        web.search_url,
        f"key {api_key.key_id}" if api_key else "no key",
        web.request_timeout_seconds,
        state.image_dir or "not served",
    )
    csp = content_security_policy(web.image_sources)

    @app.after_request
    def _headers(response: Response) -> Response:
        return add_security_headers(response, csp)

    # Errors: JSON for the API, plain pages elsewhere, never a stack trace.
    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
        return api_error(413, "too_large", f"The upload is larger than {web.max_upload_mb} MB.")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return api_error(exc.code or 500, "http_error", exc.description or exc.name)
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return api_error(500, "internal", "The web UI failed unexpectedly; the error is in its log.")

    return app
