"""The UI's routes, in the order a visit uses them: the page, what the service can do, a search, a photo.

Request path of a search: page -> POST /api/search/<scene> -> SearchClient -> search service -> typed
SearchResponse -> ResultView JSON -> the page renders it with textContent.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request, send_from_directory
from pydantic import ValidationError

from mmsearch.settings import WebSettings
from web_ui.models import (
    MAX_OFFSET,
    USER_ID_RULE,
    ResultView,
    UiFeedback,
    UiSearchRequest,
    result_view,
    valid_user_id,
)
from web_ui.scenes import scene_states
from web_ui.search_client import CLIP_HINT, IMAGE_SCENE, TEXT_SCENES, SearchClient, SearchError
from web_ui.uploads import read_photo

USER_COOKIE = "mmsearch_user"
USER_COOKIE_MAX_AGE = 365 * 24 * 3600
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
# Multipart framing and the small form fields around the photo.
MULTIPART_SLACK_BYTES = 64 * 1024
# The page gives up a little after the UI's own call to the search service would have timed out.
CLIENT_TIMEOUT_SLACK_SECONDS = 5.0
MAX_PHOTOS_PER_ADD = 10  # the page sends one photo per request; a form with more is cut here

bp = Blueprint("ui", __name__)


@dataclass(frozen=True)
class UiState:
    client: SearchClient
    max_upload_bytes: int
    max_upload_mb: int
    client_timeout_ms: int
    image_dir: Path | None
    secure_cookies: bool
    default_top_k: int
    photos_corpus: str

    @classmethod
    def from_settings(cls, web: WebSettings, client: SearchClient) -> UiState:
        return cls(
            client=client,
            max_upload_bytes=web.max_upload_mb * 1024 * 1024,
            max_upload_mb=web.max_upload_mb,
            client_timeout_ms=int((web.request_timeout_seconds + CLIENT_TIMEOUT_SLACK_SECONDS) * 1000),
            image_dir=web.image_dir.resolve() if web.image_dir is not None else None,
            secure_cookies=web.secure_cookies,
            default_top_k=web.default_top_k,
            photos_corpus=web.photos_corpus,
        )


def _state() -> UiState:
    state: UiState = current_app.extensions["mmsearch_ui"]
    return state


# --- the page ------------------------------------------------------------------------------------------


@bp.get("/")
def index() -> Response:
    state = _state()
    user_id = _cookie_user_id() or _new_user_id()
    html = render_template(
        "index.html",
        user_id=user_id,
        max_upload_bytes=state.max_upload_bytes,
        max_upload_mb=state.max_upload_mb,
        client_timeout_ms=state.client_timeout_ms,
    )
    response = Response(html, mimetype="text/html")
    _remember_user(response, user_id)
    return response


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


# --- the UI's JSON API ---------------------------------------------------------------------------------


@bp.get("/api/status")
def status() -> Response:
    """Whether the search service answers and which scenes it can serve (e.g. no CLIP model: no images)."""
    client = _state().client
    try:
        ready = client.ready()
        # /ready is bare without an admin key (the UI's key has none): the scenes' states come from /experiments.
        scenes = client.scenes()
    except SearchError as exc:
        return jsonify({"search": {"reachable": False, **exc.to_json()["error"]}, "scenes": {}})
    return jsonify(
        {
            "search": {"reachable": True, "ready": bool(ready.get("ready"))},
            "scenes": scene_states({"scenes": scenes}),
            "clipHint": CLIP_HINT,
        }
    )


@bp.post("/api/user")
def set_user() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    user_id = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or not valid_user_id(user_id):
        return api_error(400, "bad_user_id", f"The user id must be {USER_ID_RULE}.")
    response = jsonify({"userId": user_id})
    _remember_user(response, user_id)
    return response, 200


@bp.post("/api/search/<scene>")
def search(scene: str) -> tuple[Response, int]:
    try:
        if scene in TEXT_SCENES:
            view = _search_text(scene)
        elif scene == IMAGE_SCENE:
            view = _search_image()
        else:
            raise SearchError(404, "unknown_scene", f"Unknown scene {scene!r}: use qa, t2i, i2i or doc.")
    except SearchError as exc:
        return jsonify(exc.to_json()), exc.status
    response = jsonify(view.model_dump())
    _remember_user(response, view.userId)
    return response, 200


def _search_text(scene: str) -> ResultView:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise SearchError(400, "bad_request", 'Send a JSON object like {"query": "..."}.')
    try:
        parsed = UiSearchRequest.model_validate(body)
    except ValidationError as exc:
        raise SearchError(400, "bad_request", _validation_message(exc)) from exc
    user_id = _resolve_user_id(parsed.user_id)
    if parsed.top_k is None:
        parsed = parsed.model_copy(update={"top_k": _state().default_top_k})
    started = time.perf_counter()
    answer = _state().client.search_text(scene, user_id, parsed)
    ui_ms = (time.perf_counter() - started) * 1000
    return result_view(scene, parsed.query, user_id, answer, ui_ms, offset=parsed.offset)


def _search_image() -> ResultView:
    state = _state()
    photo = read_photo(request.files.get("image"), max_bytes=state.max_upload_bytes)
    user_id = _resolve_user_id(request.form.get("userId") or None)
    debug = request.form.get("debug", "false").lower() in ("1", "true", "on")
    try:
        form = UiSearchRequest.model_validate(
            {
                "query": photo.filename,
                "debug": debug,
                "pins": json.loads(request.form.get("pins") or "{}"),
                "offset": request.form.get("offset") or 0,
            }
        )
    except (ValueError, ValidationError) as exc:
        raise SearchError(
            400,
            "bad_request",
            f"pins must be a JSON object of layer name to experiment name, and offset 0 to {MAX_OFFSET}.",
        ) from exc
    started = time.perf_counter()
    answer = state.client.search_image(
        user_id,
        photo.data,
        photo.content_type,
        debug=debug,
        pins=form.pins,
        top_k=state.default_top_k,
        offset=form.offset,
    )
    ui_ms = (time.perf_counter() - started) * 1000
    return result_view(IMAGE_SCENE, photo.filename, user_id, answer, ui_ms, offset=form.offset)


@bp.post("/api/photos")
def add_photos() -> tuple[Response, int]:
    """ "Add photos": each file of the form field `photos` goes into the photo corpus (documents API, the UI's key),
    under an id made from its bytes, so the same photo added twice is one document. Answers once they are
    searchable, with what was added and what was refused and why."""
    state = _state()
    uploads = request.files.getlist("photos")
    if not uploads:
        return api_error(400, "bad_request", "Choose one or more photos to add (form field 'photos').")
    added: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    for upload in uploads[:MAX_PHOTOS_PER_ADD]:
        try:
            photo = read_photo(upload, max_bytes=state.max_upload_bytes)
            doc_id = photo_id(photo.data)
            state.client.add_photo(state.photos_corpus, doc_id, photo.data, photo.content_type, photo.filename)
        except SearchError as exc:
            failed.append({"name": (upload.filename or "")[:200], "message": exc.message})
            continue
        added.append({"id": str(doc_id), "name": photo.filename})
    if len(uploads) > MAX_PHOTOS_PER_ADD:
        failed.append({"name": "", "message": f"Only {MAX_PHOTOS_PER_ADD} photos are added at a time."})
    return jsonify({"added": added, "failed": failed}), 200 if added or not failed else 400


def photo_id(data: bytes) -> int:
    """A document id from the photo's bytes (62 bits of SHA-256: positive in Milvus' INT64)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 2


@bp.post("/api/feedback")
def feedback() -> tuple[Response, int]:
    """A result was opened (click), liked or disliked: forwarded to the search service for `mmsearch ab report`."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return api_error(400, "bad_request", 'Send a JSON object like {"requestId", "userId", "itemId", "event"}.')
    try:
        event = UiFeedback.model_validate(body)
    except ValidationError as exc:
        return api_error(400, "bad_request", _validation_message(exc))
    if not valid_user_id(event.userId):
        return api_error(400, "bad_user_id", f"The user id must be {USER_ID_RULE}.")
    try:
        answer = _state().client.feedback(event)
    except SearchError as exc:
        return jsonify(exc.to_json()), exc.status
    return jsonify({"recorded": bool(answer.get("recorded"))}), 200


# --- local photos ---------------------------------------------------------------------------------------


@bp.get("/images/<path:name>")
def images(name: str) -> Response:
    image_dir = _state().image_dir
    if image_dir is None or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        abort(404)
    # send_from_directory joins safely: "..", absolute paths and escapes outside image_dir answer 404.
    return send_from_directory(image_dir, name, max_age=3600)


# --- helpers --------------------------------------------------------------------------------------------


def api_error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(SearchError(status, code, message).to_json()), status


def _cookie_user_id() -> str | None:
    value = request.cookies.get(USER_COOKIE)
    return value if value and valid_user_id(value) else None


def _new_user_id() -> str:
    # Experiments are sticky per user: a visitor without an id gets a random one, kept in the cookie.
    return f"web-{secrets.token_hex(4)}"


def _resolve_user_id(given: str | None) -> str:
    if given is None:
        return _cookie_user_id() or _new_user_id()
    if not valid_user_id(given):
        raise SearchError(400, "bad_user_id", f"The user id must be {USER_ID_RULE}.")
    return given


def _remember_user(response: Response, user_id: str) -> None:
    response.set_cookie(
        USER_COOKIE,
        user_id,
        max_age=USER_COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=_state().secure_cookies,
    )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)
