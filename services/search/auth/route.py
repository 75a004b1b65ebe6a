"""Every route of the search service declares what it needs of its caller, and is checked before its body is read.

A route declares its scope with `openapi_extra=needs("search", scene=...)` (also shown in the OpenAPI document as
`x-mmsearch-scope`). `GuardedRoute`, the app's route class, reads it when the route is created and refuses a route
without one (the app does not start), then runs the guard ahead of FastAPI's own handler, so a request without
the right key is answered before its body is parsed or a dependency is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from mmsearch.settings import Scope
from services.search.auth.guard import Access, Guard

SCOPE_KEY = "x-mmsearch-scope"
_ACCESS_KEY = "x-mmsearch-access"

# How /docs offers a key ("Authorize") and documents it: the two headers a key may come in.
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "An mmsearch API key: mms_<key id>_<secret>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_ERROR_REF = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
_KEY_ERRORS = {
    "401": {"description": "No key, or one that is malformed, unknown, expired, revoked or rotated out", **_ERROR_REF},
    "429": {"description": "Rate limit spent, or too many failed authentications (Retry-After)", **_ERROR_REF},
}
_SCOPE_ERRORS = {"403": {"description": "The key lacks the route's scope or corpus", **_ERROR_REF}}


class RouteWithoutScopeError(RuntimeError):
    pass


def needs(
    scope: Scope | None,
    *,
    read_key: bool = True,
    scene: str | None = None,
    scene_param: str | None = None,
    corpus_param: str | None = None,
) -> dict[str, Any]:
    """A route's `openapi_extra`: the scope it needs (None: open to all; with read_key, a key sent is still
    checked, so the route can do more for some keys, as /ready's details for admin)."""
    access = Access(scope, read_key=read_key, scene=scene, scene_param=scene_param, corpus_param=corpus_param)
    extra: dict[str, Any] = {SCOPE_KEY: access.describe(), _ACCESS_KEY: access}
    if read_key:
        security: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
        # An open route that reads a key works without one too: `{}` is "no security" in OpenAPI.
        extra["security"] = security if scope is not None else [*security, {}]
        extra["responses"] = {**_KEY_ERRORS, **(_SCOPE_ERRORS if scope is not None else {})}
    return extra


def with_security_schemes(openapi: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document with the key's two headers declared (FastAPI caches the document it builds)."""

    def document() -> dict[str, Any]:
        schema = openapi()
        schema.setdefault("components", {}).setdefault("securitySchemes", SECURITY_SCHEMES)
        return schema

    return document


class GuardedRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = dict(kwargs.get("openapi_extra") or {})
        access = extra.pop(_ACCESS_KEY, None)
        if not isinstance(access, Access):
            raise RouteWithoutScopeError(
                f"route {sorted(kwargs.get('methods') or [])} {path} declares no scope: add "
                "openapi_extra=needs(<scope> | None) (services/search/auth/route.py)"
            )
        self.access = access
        # The access object is ours, not OpenAPI's: the document keeps only the scope's name.
        super().__init__(path, endpoint, **{**kwargs, "openapi_extra": extra})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        access = self.access

        async def guarded(request: Request) -> Response:
            guard: Guard = request.app.state.guard
            address = request.client.host if request.client else "unknown"
            request.state.principal = await guard.authorize(access, request.headers, address, request.path_params)
            return await handler(request)

        return guarded
