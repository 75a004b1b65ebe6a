"""What a Milvus collection records about the vectors in it, so the search side can refuse a mismatched model.

Kept in collection properties (not the description, which Milvus Lite does not return through an alias).
Corpora are served through an alias named after the corpus; physical collections are `<alias>__<timestamp>`,
so a re-index builds a new collection and switches the alias only once it is verified.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PREFIX = "mmsearch."
PRIMARY_KEY = "id"  # INT64, the corpus row's id; the MongoDB document of the row has the same id


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
    # Text fields searchable with BM25 (each with a `<field>_bm25` sparse vector made by Milvus), and their analyzer.
    lexical_fields: tuple[str, ...] = ()
    analyzer: str = ""
    # A document corpus (mmsearch/chunking.py): every row is a chunk of a document, keyed by `doc_id`; the encode
    # template makes a document's text, which is split into chunks of `chunk_tokens` (0: one chunk, the whole text)
    # overlapping by `chunk_overlap`. Search collapses chunks to documents; live writes chunk the same way.
    encode_template: str = ""
    chunk_tokens: int = 0
    chunk_overlap: int = 0

    @property
    def documents(self) -> bool:
        return bool(self.encode_template)

    def chunking(self) -> str:
        return describe_chunking(self.encode_template, self.chunk_tokens, self.chunk_overlap)

    @field_validator("lexical_fields", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        # Properties are strings: a comma-separated list there.
        return tuple(f for f in v.split(",") if f) if isinstance(v, str) else v


def describe_chunking(template: str, tokens: int, overlap: int) -> str:
    """How a corpus is split, in words (errors and `GET /corpora/{c}`)."""
    if not template:
        return "rows (one vector per corpus row)"
    if not tokens:
        return f"whole documents of {template!r}"
    return f"documents of {template!r} in chunks of {tokens} tokens, overlap {overlap}"


def sparse_field(lexical_field: str) -> str:
    """The SPARSE_FLOAT_VECTOR field that Milvus' BM25 function fills from a lexical text field."""
    return f"{lexical_field}_bm25"


_OPTIONAL = {"lexical_fields", "analyzer", "encode_template", "chunk_tokens", "chunk_overlap"}


def to_properties(meta: CollectionMeta) -> dict[str, str]:
    # Unset optional fields are left out, so a collection without lexical fields reads the same to an older
    # search service (whose metadata model forbids unknown keys) during a rolling upgrade.
    return {
        PREFIX + k: ",".join(v) if isinstance(v, tuple) else str(v)
        for k, v in meta.model_dump().items()
        if k not in _OPTIONAL or v
    }


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
