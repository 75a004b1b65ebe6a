"""FastAPI's request validation errors as one sentence that says what to send.

FastAPI answers a body that is not JSON, JSON that is not an object, or a field of the wrong type or range
with `{"detail": [...]}`, a second error shape. The app turns every such error into the documented
`{error, message, dependency}` (422, kind "invalid_request") with the message built here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

EXAMPLE = '{"query": "how do I apply for a building permit"}'
_UNION_TAG = re.compile(r"^(str|int|float|bool|bytes|none|[a-z]+\[.*\])$")
_VALID = re.compile(r"^Input should be a valid (\w+)")
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
    # A body that does not parse is reported at ("body", <offset>); one sent as another content type arrives raw.
    if kind == "json_invalid" or (where == "body" and isinstance(error.get("input"), bytes | bytearray)):
        return f"the body is not valid JSON: send a JSON object such as {EXAMPLE} (Content-Type: application/json)"
    if where == "body" and not field:
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


def _untagged(error: dict[str, Any]) -> dict[str, Any]:
    """Drop the union-member tags pydantic appends to a location (filters.c.str, filters.c.list[...])."""
    loc = list(error.get("loc", ()))
    while len(loc) > 2 and isinstance(loc[-1], str) and _UNION_TAG.match(loc[-1]):
        loc.pop()
    return {**error, "loc": tuple(loc)}


def describe(errors: Sequence[Any]) -> str:
    """Every problem of one request, most useful first, joined into one message.

    A value that fits none of a union's types gives one error per type; they become one line per field that
    names every type accepted.
    """
    by_field: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for raw in errors:
        if isinstance(raw, dict):
            e = _untagged(raw)
            by_field.setdefault(e["loc"], []).append(e)
    parts: list[str] = []
    for loc, errs in by_field.items():
        wanted = [m.group(1) for e in errs if (m := _VALID.match(str(e.get("msg", ""))))]
        if len(errs) > 1 and len(wanted) == len(errs):
            field = ".".join(str(p) for p in loc[1:])
            parts.append(f"{field}: Input should be a valid {', '.join(wanted[:-1])} or {wanted[-1]}")
        else:
            parts.extend(_one(e) for e in errs)
    return "; ".join(dict.fromkeys(parts)) or "the request is not valid"
