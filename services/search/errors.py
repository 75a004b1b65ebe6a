"""Domain errors of the search service. Each class carries its HTTP status and the `error` kind of the one JSON
error shape `{error, message, dependency}`, so the HTTP layer has a single handler and no table to keep."""

from __future__ import annotations

from typing import Literal

Dependency = Literal["tokenizer", "model server", "milvus", "mongodb", "config"]


class SearchError(Exception):
    status_code = 500
    kind = "search_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}  # sent with the error response (WWW-Authenticate, Retry-After)


class InvalidQueryError(SearchError):
    """The request is malformed in a way the client must fix (422)."""

    status_code = 422
    kind = "invalid_query"


class SceneNotFoundError(SearchError):
    status_code = 404
    kind = "unknown_scene"


class SceneDisabledError(SearchError):
    """The scene is configured but cannot serve (a model or collection is missing); the message says how to fix it."""

    status_code = 503
    kind = "scene_disabled"


class DependencyUnavailableError(SearchError):
    """A backing service is down or too slow: 503 naming it."""

    status_code = 503
    kind = "dependency_unavailable"

    def __init__(self, dependency: Dependency, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


class ConfigError(Exception):
    """An A/B config that must not be applied; `problems` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
