"""The web UI's only way to the search service: HTTP with a timeout, errors mapped to what a person can act on.

The UI holds no search logic. It forwards the query, parses the service's answer into typed models at this
boundary, and turns every failure (nothing listening, a timeout, a 5xx, a scene without a model) into a
`SearchError` with the HTTP status the UI's own API answers and a message that says what to do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from web_ui.models import SearchResponse, UiFeedback, UiSearchRequest

log = logging.getLogger(__name__)

# The scenes of the reference's HTTP API, by the short name the UI uses in its own routes.
TEXT_SCENES = {"qa": "questionAnswer", "t2i": "textToImage", "doc": "documents"}
# The search service's route of each: its own for the reference's scenes, /scene/<name> for the others.
_ROUTES = {"qa": "/qa", "t2i": "/t2i", "doc": "/scene/documents"}
IMAGE_SCENE = "i2i"
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}
SCENE_TITLES = {
    "qa": "question answering",
    "t2i": "text-to-image",
    "i2i": "search by image",
    "doc": "document search",
}

CLIP_HINT = (
    "Text-to-image and search by image need a CLIP model in the model repository: run "
    "`mmsearch export clip --source <hub id|folder> --key clip`, ingest your photos with "
    "`mmsearch ingest images --dir <photo folder> --corpus photos --model clip-image "
    "--base-url <where they are served>`, "
    "then restart the search service (with the local stack: `mmsearch local up --clip-source <hub id|folder>`)."
)


@dataclass(frozen=True)
class SearchError(Exception):
    """A search that could not be answered; `status` is what the UI's API returns to the page."""

    status: int
    code: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return {"error": body}


KEY_HINT = (
    "The web UI's key for the search service is missing, wrong, revoked or lacks a scope: create one with "
    "`mmsearch keys create --name web-ui --scopes search,feedback --out FILE` and point MMSEARCH_WEB__API_KEY_FILE "
    "at FILE (the local stack does this by itself)."
)


class SearchClient:
    """A small synchronous client; one pooled httpx.Client shared by the UI's worker threads. The UI's API key
    (if any) rides on every request to the search service, and only there: nothing the browser receives holds it."""

    def __init__(self, base_url: str, *, timeout_seconds: float, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        headers = {"User-Agent": "mmsearch-web-ui"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            # Connecting to a loopback or cluster service is fast; a long connect means it is gone.
            timeout=httpx.Timeout(timeout_seconds, connect=min(3.0, timeout_seconds)),
            follow_redirects=False,
            headers=headers,
        )

    def close(self) -> None:
        self._http.close()

    # --- the scenes -------------------------------------------------------------------------------

    def search_text(self, scene: str, user_id: str, request: UiSearchRequest) -> SearchResponse:
        body: dict[str, Any] = {
            "query": request.query,
            "useDebug": request.debug,
            "specifiedLayerAndExperiment": dict(request.pins) if request.debug else {},
        }
        if request.top_k is not None:
            body["topK"] = request.top_k
        if request.offset:
            body["offset"] = request.offset
        if request.category:
            body["filters"] = {"category": request.category}
        return self._post(scene, f"{_ROUTES[scene]}/user/{quote(user_id, safe='')}", json_body=body)

    def search_image(
        self,
        user_id: str,
        image: bytes,
        content_type: str,
        *,
        debug: bool,
        pins: dict[str, str],
        top_k: int,
        offset: int = 0,
    ) -> SearchResponse:
        data = {
            "useDebug": "true" if debug else "false",
            "specifiedLayerAndExperiment": json.dumps(pins if debug else {}),
            "topK": str(top_k),
            "offset": str(offset),
        }
        # The person's file name stays here: the service gets a neutral name and the bytes.
        files = {"image": ("upload" + _SUFFIX.get(content_type, ""), image, content_type)}
        return self._post(IMAGE_SCENE, f"/{IMAGE_SCENE}/user/{quote(user_id, safe='')}", data=data, files=files)

    def add_photo(self, corpus: str, doc_id: int, photo: bytes, content_type: str, name: str) -> dict[str, Any]:
        """PUT one photo into an image corpus through the documents API (answers once it is searchable)."""
        files = {"image": ("upload" + _SUFFIX.get(content_type, ""), photo, content_type)}
        try:
            response = self._http.put(
                f"/corpora/{quote(corpus, safe='')}/documents/{doc_id}", files=files, data={"name": name}
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "adding a photo") from exc
        return _write_answer(response, refused=(404, 413, 415, 422), cannot="add the photo")

    def feedback(self, event: UiFeedback) -> dict[str, Any]:
        """Forward a click / like / dislike to the service's POST /feedback; its answer, or a SearchError."""
        try:
            response = self._http.post("/feedback", json=event.model_dump())
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "feedback") from exc
        # 404/413/422: not stored, for a reason of the event itself (an expired search, an item it did not show).
        return _write_answer(response, refused=(404, 413, 422), cannot="record feedback")

    def scenes(self) -> dict[str, str]:
        """Each scene of the config in force: "enabled" or why it cannot serve (GET /experiments); empty when the
        service cannot say (no config yet, down): the page then finds out when it searches."""
        try:
            response = self._http.get("/experiments")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "status") from exc
        if response.status_code in (401, 403):
            raise _key_error(*_error_detail(response))
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        scenes = body.get("scenes") if isinstance(body, dict) else None
        if not isinstance(scenes, dict):
            return {}
        return {
            str(name): str(info.get("disabled") or "enabled") if isinstance(info, dict) else "enabled"
            for name, info in scenes.items()
        }

    def ready(self) -> dict[str, Any]:
        """The service's /ready body (whatever its status code says), or a SearchError if it can't be had."""
        try:
            response = self._http.get("/ready")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "status") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise SearchError(
                502,
                "bad_gateway",
                f"The search service's /ready answered {response.status_code} with something that is not JSON.",
            ) from exc
        if not isinstance(body, dict):
            raise SearchError(502, "bad_gateway", "The search service's /ready answered an unexpected shape.")
        body.setdefault("ready", response.status_code == 200)
        return body

    # --- plumbing ---------------------------------------------------------------------------------

    def _post(self, scene: str, path: str, **kwargs: Any) -> SearchResponse:
        json_body = kwargs.pop("json_body", None)
        try:
            response = self._http.post(path, json=json_body, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, SCENE_TITLES.get(scene, scene)) from exc
        if response.status_code >= 400:
            raise self._service_error(scene, response)
        try:
            return SearchResponse.model_validate_json(response.content)
        except ValidationError as exc:
            log.warning("search service answered %s with an unexpected body: %s", path, exc)
            raise SearchError(
                502,
                "bad_gateway",
                "The search service answered with a response this UI does not understand "
                "(is search_url pointing at the mmsearch search service?).",
            ) from exc

    def _transport_error(self, exc: httpx.HTTPError, what: str) -> SearchError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            log.warning("search service timed out after %.1fs (%s)", self.timeout_seconds, what)
            return SearchError(
                504,
                "timeout",
                f"The search service did not answer within {self.timeout_seconds:g} seconds. "
                "It may be overloaded or one of its dependencies is slow; try again shortly.",
            )
        log.warning("search service at %s unreachable: %s", self.base_url, exc)
        return SearchError(
            503,
            "unreachable",
            "The search service cannot be reached. Start it with `mmsearch serve search` (or `mmsearch local up`), "
            "or point the web UI at it with MMSEARCH_WEB__SEARCH_URL.",
        )

    def _service_error(self, scene: str, response: httpx.Response) -> SearchError:
        kind, detail = _error_detail(response)
        status = response.status_code
        if status in (401, 403):
            return _key_error(kind, detail)
        if kind == "scene_disabled" or _says_not_configured(status, detail):
            title = SCENE_TITLES.get(scene, scene)
            message = detail or f"{title.capitalize()} is not configured."
            return SearchError(503, "not_configured", message, hint=CLIP_HINT)
        if status in (400, 404, 413, 415, 422):
            # The service refused the request: its reason is for the person who typed it.
            return SearchError(400 if status == 404 else status, "rejected", detail or f"Rejected ({status}).")
        if status == 429:
            return SearchError(503, "busy", "The search service is busy right now; try again in a moment.")
        if status in (502, 503, 504):
            return SearchError(503, "unavailable", f"The search service cannot answer: {detail or status}.")
        return SearchError(502, "bad_gateway", f"The search service failed ({status}): {detail or 'no detail'}.")


def _write_answer(response: httpx.Response, *, refused: tuple[int, ...], cannot: str) -> dict[str, Any]:
    """The body of a write the service took, or the SearchError saying why not: the UI's key (401/403), the
    request itself (`refused`; 404 becomes 400), else the service cannot `cannot` now (503)."""
    status = response.status_code
    if status < 400:
        body: dict[str, Any] = response.json()
        return body
    kind, detail = _error_detail(response)
    if status in (401, 403):
        raise _key_error(kind, detail)
    if status in refused:
        raise SearchError(400 if status == 404 else status, kind or "rejected", detail or f"Rejected ({status}).")
    raise SearchError(503, "unavailable", f"The search service cannot {cannot}: {detail or status}.")


def _key_error(kind: str | None, detail: str) -> SearchError:
    """The search service refused the UI's key: nothing the person at the page can fix, so the page says the
    service is unavailable and the log says why (the service's message names the scope, never the key)."""
    log.warning("the search service refused the web UI's key (%s): %s", kind or "no kind", detail)
    return SearchError(503, "not_authorized", "The search service refused this web UI's access.", hint=KEY_HINT)


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    """(kind, reason) from the search service's one error shape {"error": kind, "message": reason}; anything
    else (a proxy's page in front of it, say) as the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300].strip()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        kind = body.get("error") if isinstance(body.get("error"), str) else None
        return kind, body["message"][:500]
    return None, json.dumps(body)[:300]


def _says_not_configured(status: int, detail: str) -> bool:
    lowered = detail.lower()
    return status in (404, 409, 501, 503) and (
        "not configured" in lowered or "not enabled" in lowered or "mmsearch export clip" in lowered
    )
