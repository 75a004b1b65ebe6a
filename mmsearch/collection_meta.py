"""What a Milvus collection records about the vectors in it, so the search side can refuse a mismatched model.

Kept in collection properties (not the description, which Milvus Lite does not return through an alias).
Corpora are served through an alias named after the corpus; physical collections are `<alias>__<timestamp>`,
so a re-index builds a new collection and switches the alias only once it is verified.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PREFIX = "mmsearch."


class CollectionMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_key: str
    dim: int
    vector_field: str
    metric: str
    index_type: str
    corpus: str
    count: int
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def to_properties(meta: CollectionMeta) -> dict[str, str]:
    return {PREFIX + k: str(v) for k, v in meta.model_dump().items()}


def from_properties(props: dict[str, Any] | None) -> CollectionMeta | None:
    """None for a collection that mmsearch did not write (no properties of ours)."""
    ours = {k[len(PREFIX) :]: v for k, v in (props or {}).items() if k.startswith(PREFIX)}
    if not ours:
        return None
    try:
        return CollectionMeta.model_validate(ours)
    except ValidationError as exc:
        raise ValueError(f"collection properties {ours} are not valid mmsearch metadata: {exc}") from exc


def physical_name(alias: str, when: datetime | None = None) -> str:
    return f"{alias}__{(when or datetime.now(UTC)).strftime('%Y%m%d%H%M%S')}"
