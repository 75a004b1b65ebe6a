"""FastAPI's request validation errors as one sentence that says what to send.

FastAPI answers a body that is not JSON, JSON that is not an object, or a field of the wrong type or range
with `{"detail": [...]}`, a second error shape. The app turns every such error into the documented
`{error, message, dependency}` (422, kind "invalid_request") with the message built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXAMPLE = '{"query": "how do I apply for a building permit"}'
_WHERE = {"path": "in the URL path", "query": "in the URL query string", "header": "in a header"}


def _what(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    if value is None:
        return "null"
    return type(value).__name__


def _one(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    kind = str(error.get("type", ""))
    where, field = (loc[0], ".".join(loc[1:])) if loc else ("body", "")
    if where == "body" and not field:
        if kind == "json_invalid":
            return f"the body is not valid JSON: send a JSON object such as {EXAMPLE} (Content-Type: application/json)"
        if kind == "missing":
            return f"the body is empty: send a JSON object such as {EXAMPLE}"
        return f"the body must be a JSON object such as {EXAMPLE}, not {_what(error.get('input'))}"
    message = str(error.get("msg", "is not valid"))
    if kind == "missing":
        return f"{field or 'a value'} is required ({_WHERE.get(where, 'in the body')})"
    place = f" {_WHERE[where]}" if where in _WHERE else ""
    got = error.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict | list) and len(repr(got)) <= 60 else ""
    return f"{field}{place}: {message}{shown}"


def describe(errors: Sequence[Any]) -> str:
    """Every problem of one request, most useful first, joined into one message."""
    parts = [_one(e) for e in errors if isinstance(e, dict)]
    return "; ".join(dict.fromkeys(parts)) or "the request is not valid"
