"""Every route of the search service declares its scope: the app's routes equal the table in tests/fixtures/auth.py
(a new route fails here until it is added there with its scope), a route without a scope stops the app, the
OpenAPI document shows each scope, and the README's table says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from mmsearch.settings import Settings
from services.search.app import create_app
from services.search.auth.route import SCOPE_KEY, GuardedRoute, RouteWithoutScopeError, needs
from tests.fixtures.auth import ROUTES

README = Path(__file__).resolve().parents[2] / "README.md"
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _app() -> FastAPI:
    return create_app(Settings())


def test_every_route_has_the_scope_of_the_table_and_the_table_has_every_route() -> None:
    app = _app()
    declared = {
        (method, route.path): route.access.describe()
        for route in app.routes
        if isinstance(route, GuardedRoute)
        for method in route.methods or ()
    }
    assert declared == {(r.method, r.path): r.scope for r in ROUTES}
    # FastAPI's own pages describe the API and hold no data; they are the only routes that are not guarded.
    others = {getattr(route, "path", "") for route in app.routes if not isinstance(route, GuardedRoute)}
    assert others == DOCS_ROUTES
    assert all(not isinstance(route, APIRoute) for route in app.routes if getattr(route, "path", "") in DOCS_ROUTES)


def test_scene_routes_check_the_keys_corpora() -> None:
    app = _app()
    by_path = {route.path: route.access for route in app.routes if isinstance(route, GuardedRoute)}
    for case in ROUTES:
        access = by_path[case.path]
        reaches = access.scene is not None or access.scene_param is not None or access.corpus_param is not None
        assert reaches == case.corpora, case.path


def test_a_route_without_a_scope_stops_the_app() -> None:
    app = FastAPI()
    app.router.route_class = GuardedRoute
    with pytest.raises(RouteWithoutScopeError, match=r"GET.*/unguarded declares no scope"):

        @app.get("/unguarded")
        async def unguarded() -> dict[str, str]:
            return {}

    @app.get("/guarded", openapi_extra=needs("admin"))
    async def guarded() -> dict[str, str]:
        return {}

    assert app.openapi()["paths"]["/guarded"]["get"][SCOPE_KEY] == "admin"


def test_the_openapi_document_shows_each_routes_scope() -> None:
    paths = _app().openapi()["paths"]
    for case in ROUTES:
        assert paths[case.path][case.method.lower()][SCOPE_KEY] == case.scope, case.path


def test_the_readme_table_says_the_same() -> None:
    text = README.read_text(encoding="utf-8")
    for case in ROUTES:
        row = re.search(rf"^\| `{case.method} {re.escape(case.path)}` \| ([^|]+)\|", text, flags=re.M)
        assert row is not None, f"README has no row for {case.method} {case.path}"
        assert row.group(1).strip().startswith(f"`{case.scope}`"), (case.path, row.group(1))
