"""Request filters become Milvus expressions from typed values; nothing from the request is pasted as code."""

from __future__ import annotations

import pytest

from services.search.errors import InvalidQueryError
from services.search.filters import build_expression, literal

ALLOWED = {"category": "array", "brand": "scalar", "year": "scalar"}


def test_expressions_for_array_and_scalar_fields() -> None:
    assert build_expression({}, ALLOWED) == ""  # type: ignore[arg-type]
    assert build_expression({"category": "Permits"}, ALLOWED) == 'ARRAY_CONTAINS(category, "Permits")'  # type: ignore[arg-type]
    assert (
        build_expression({"category": ["a", "b"], "year": 2024}, ALLOWED)  # type: ignore[arg-type]
        == 'ARRAY_CONTAINS_ANY(category, ["a", "b"]) and year == 2024'
    )
    assert build_expression({"brand": ["x", "y"]}, ALLOWED) == 'brand in ["x", "y"]'  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hostile",
    ['x") or id > 0 or ARRAY_CONTAINS(category, "', 'a" || true || "', '\\" or 1==1', 'quote"inside'],
)
def test_injection_attempts_stay_inside_one_string_literal(hostile: str) -> None:
    expr = build_expression({"category": hostile}, ALLOWED)  # type: ignore[arg-type]
    lit = expr[len("ARRAY_CONTAINS(category, ") : -1]
    # The literal opens and closes once: every inner quote is escaped.
    assert lit.startswith('"')
    assert lit.endswith('"')
    inner = lit[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2
            continue
        assert inner[i] != '"', expr
        i += 1


def test_refused_filters_say_why() -> None:
    with pytest.raises(InvalidQueryError, match="filterable fields are brand, category, year"):
        build_expression({"id": 1}, ALLOWED)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match="control characters"):
        literal("a\nb")
    with pytest.raises(InvalidQueryError, match="finite"):
        literal(float("nan"))
    with pytest.raises(InvalidQueryError, match="empty list"):
        build_expression({"category": []}, ALLOWED)  # type: ignore[arg-type]
    assert literal(True) == "true"
    assert literal(1.5) == "1.5"
