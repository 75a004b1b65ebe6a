"""Milvus boolean expressions from request filters, built from typed values, never by pasting request text.

Field names come from the experiment's `filterFields` allow-list (and must look like identifiers); values are
rendered as Milvus literals: strings quoted with backslash escapes, numbers via repr, booleans as true/false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from services.search.errors import InvalidQueryError

FilterValue = str | int | float | bool
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_VALUE_CHARS = 256
MAX_VALUES = 64


def literal(value: FilterValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQueryError(f"filter value {value!r} is not a finite number")
        return repr(value)
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidQueryError(f"filter value longer than {MAX_VALUE_CHARS} characters")
    if any(ord(c) < 0x20 for c in value):
        raise InvalidQueryError("filter values must not contain control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_expression(
    filters: Mapping[str, FilterValue | Sequence[FilterValue]],
    allowed: Mapping[str, Literal["array", "scalar"]],
) -> str:
    """One expression AND-ing every filter; '' when there are none. A list value matches any of its values."""
    parts: list[str] = []
    for name in sorted(filters):
        if name not in allowed or not _FIELD_RE.match(name):
            have = ", ".join(sorted(allowed)) or "none"
            raise InvalidQueryError(f"cannot filter on {name!r}: filterable fields are {have}")
        raw = filters[name]
        values = [raw] if isinstance(raw, str | int | float | bool) else list(raw)
        if not values:
            raise InvalidQueryError(f"filter {name!r} has an empty list of values")
        if len(values) > MAX_VALUES:
            raise InvalidQueryError(f"filter {name!r} has more than {MAX_VALUES} values")
        lits = [literal(v) for v in values]
        if allowed[name] == "array":
            if len(lits) == 1:
                parts.append(f"ARRAY_CONTAINS({name}, {lits[0]})")
            else:
                parts.append(f"ARRAY_CONTAINS_ANY({name}, [{', '.join(lits)}])")
        elif len(lits) == 1:
            parts.append(f"{name} == {lits[0]}")
        else:
            parts.append(f"{name} in [{', '.join(lits)}]")
    return " and ".join(parts)
