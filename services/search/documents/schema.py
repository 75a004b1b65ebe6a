"""What a corpus takes, read from what the ingest recorded in Milvus, and the check of one live document against it.

A live document goes through the same normalisation as a row of `mmsearch ingest qa` (offline/preprocess/qa.py)
and must fit the collection the ingest built: its filter fields' types and sizes, its lexical fields' lengths. So
a document written live and the same document ingested offline store the same fields, and Milvus never refuses
what the journal accepted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmsearch.chunking import (
    CHUNK_FIELDS,
    DOCUMENT_FIELD,
    MAX_DOCUMENT_ID,
    PASSAGE_FIELD,
    POSITION_FIELD,
    chunk_key,
)
from mmsearch.collection_meta import PRIMARY_KEY, CollectionMeta, from_properties, sparse_field
from offline.preprocess.qa import QAOptions, normalise, parse_id
from offline.preprocess.rejects import Reject
from services.search.documents.errors import DocumentTooLargeError, InvalidDocumentError, UnsupportedCorpusError

Kind = Literal["varchar", "array", "int64", "double", "bool"]
_KINDS: dict[str, Kind] = {"VARCHAR": "varchar", "ARRAY": "array", "INT64": "int64", "DOUBLE": "double", "BOOL": "bool"}
_QA_OPTIONS = QAOptions.for_format("jsonl")  # the ingest's own rules for a jsonl row: field names, categories


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Kind
    max_length: int = 0  # VARCHAR bytes; 0: not recorded
    max_capacity: int = 0  # array elements

    def check(self, value: Any) -> Any:
        """The value to store in Milvus (the ingest's default for a missing one), or InvalidDocumentError."""
        if value is None:
            if self.kind in ("varchar", "array"):
                return "" if self.kind == "varchar" else []
            raise InvalidDocumentError(f"field {self.name!r} is missing: this corpus filters on it ({self.kind})")
        ok = {
            "varchar": isinstance(value, str),
            "array": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "int64": isinstance(value, int) and not isinstance(value, bool),
            "double": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[self.kind]
        if not ok:
            want = "a list of text" if self.kind == "array" else self.kind
            raise InvalidDocumentError(f"field {self.name!r} must be {want}, not {type(value).__name__}")
        if self.kind == "varchar" and self.max_length and len(value.encode()) > self.max_length:
            raise InvalidDocumentError(
                f"field {self.name!r} is {len(value.encode())} bytes; this corpus holds at most {self.max_length} "
                "(re-ingest to make room)"
            )
        if self.kind == "array" and self.max_capacity and len(value) > self.max_capacity:
            raise InvalidDocumentError(
                f"field {self.name!r} has {len(value)} items; this corpus holds at most {self.max_capacity}"
            )
        return float(value) if self.kind == "double" else value


@dataclass(frozen=True)
class CorpusSchema:
    """One corpus as its Milvus collection records it (through the alias, so after a rebuild it is the new one)."""

    name: str
    meta: CollectionMeta
    scalars: tuple[FieldSpec, ...]  # filter fields
    lexical: tuple[FieldSpec, ...]  # BM25 text fields

    @property
    def source_field(self) -> str:
        """The field the vectors encode (`question` -> `question_emb`)."""
        return self.meta.vector_field.removesuffix("_emb")

    @property
    def encoding(self) -> str:
        """What a vector of this corpus is made with: a vector made for another (a write accepted before a rebuild
        changed the model, or a document corpus's split) is made again before it is applied."""
        made = f"{self.meta.model_key}/{self.meta.vector_field}/{self.meta.dim}"
        if self.meta.documents:
            made += f"/{self.meta.encode_template}/{self.meta.chunk_tokens}/{self.meta.chunk_overlap}"
        return made

    def check_passages(self, passages: Sequence[tuple[int, str]]) -> None:
        """A document corpus: InvalidDocumentError when a passage is longer than the collection's passage field
        holds (a corpus ingested with --no-bm25 sized it to its longest passage)."""
        field = next((f for f in (*self.scalars, *self.lexical) if f.name == PASSAGE_FIELD), None)
        if field is None:
            return
        for _, text in passages:
            field.check(text)

    @property
    def filters(self) -> tuple[FieldSpec, ...]:
        """The filter fields a document brings (a document corpus's rows also hold its id, position and passage)."""
        return tuple(f for f in self.scalars if not (self.meta.documents and f.name in CHUNK_FIELDS))

    @property
    def kind(self) -> str:
        if self.meta.documents:
            return "documents"
        return {"question": "qa", "image": "images"}.get(self.source_field, "other")

    def describe(self) -> dict[str, Any]:
        return {
            "corpus": self.name,
            "kind": self.kind,
            "model": self.meta.model_key,
            "dim": self.meta.dim,
            "encodedField": self.source_field,
            "filterFields": [{"name": f.name, "type": f.kind} for f in self.filters],
            "lexicalFields": list(self.meta.lexical_fields),
            "analyzer": self.meta.analyzer or None,
            "chunking": self.meta.chunking(),
        }


def schema_of(alias: str, described: dict[str, Any]) -> CorpusSchema | None:
    """The schema from pymilvus' describe_collection of the alias; None for a collection mmsearch did not build."""
    meta = from_properties(described.get("properties"))
    if meta is None:
        return None
    skip = {PRIMARY_KEY, meta.vector_field, *(sparse_field(f) for f in meta.lexical_fields)}
    scalars: list[FieldSpec] = []
    lexical: list[FieldSpec] = []
    for f in described.get("fields", []):
        name = str(f["name"])
        kind = _KINDS.get(getattr(f.get("type"), "name", str(f.get("type"))))
        if name in skip or kind is None:
            continue
        params = f.get("params") or {}
        spec = FieldSpec(name, kind, int(params.get("max_length", 0)), int(params.get("max_capacity", 0)))
        (lexical if name in meta.lexical_fields else scalars).append(spec)
    return CorpusSchema(alias, meta, tuple(scalars), tuple(lexical))


@dataclass(frozen=True)
class LiveDocument:
    id: int
    fields: dict[str, Any]  # as MongoDB stores them (besides _id and queryid), exactly as the ingest would

    def text(self, schema: CorpusSchema) -> str:
        return str(self.fields[schema.source_field])

    def check_fits(self, schema: CorpusSchema) -> None:
        """InvalidDocumentError naming the field when the corpus's collection cannot hold this document: a filter
        field's type or size, a lexical field's length. A document corpus's template fields and passages are checked
        when it is split (DocumentEncoder.passages, which both the write and the applier run next)."""
        if schema.meta.documents:
            for f in schema.filters:
                f.check(self.fields.get(f.name))
            return
        for f in (*schema.scalars, *schema.lexical):
            f.check(self.fields.get(f.name))

    def passage_entities(
        self, schema: CorpusSchema, passages: Sequence[tuple[int, str]], vectors: Sequence[list[float]]
    ) -> list[dict[str, Any]]:
        """A document corpus's Milvus rows of this document: one per passage (position, text), as the ingest's
        chunk rows (offline/preprocess/chunks.py) make them."""
        out = []
        for (position, text), vector in zip(passages, vectors, strict=True):
            entity: dict[str, Any] = {
                PRIMARY_KEY: chunk_key(self.id, position),
                schema.meta.vector_field: vector,
                DOCUMENT_FIELD: self.id,
                POSITION_FIELD: position,
                PASSAGE_FIELD: text,
            }
            for f in schema.filters:
                entity[f.name] = f.check(self.fields.get(f.name))
            out.append(entity)
        return out

    def entity(self, schema: CorpusSchema, vector: list[float]) -> dict[str, Any]:
        """The Milvus row, as offline/push/milvus_push.entity_batches makes it."""
        entity: dict[str, Any] = {PRIMARY_KEY: self.id, schema.meta.vector_field: vector}
        for f in schema.scalars:
            entity[f.name] = f.check(self.fields.get(f.name))
        for f in schema.lexical:
            entity[f.name] = self.fields.get(f.name) or ""
        return entity


def document_id(text: str) -> int:
    """A path's id as the corpus's INT64 primary key holds it (0..2^63-1), else 422."""
    try:
        return parse_id(text)
    except ValueError as exc:
        raise InvalidDocumentError(f"document id: {exc}") from exc


_EXTENSIONS = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"RIFF": ".webp", b"BM": ".bmp"}


@dataclass(frozen=True)
class PhotoPlace:
    """Where live photos go (documents.image_dir) and the URL prefix they are served under."""

    folder: Path
    base_url: str


def photo_document(
    schema: CorpusSchema, doc_id: int, fields: dict[str, str], data: bytes, *, filename: str, place: PhotoPlace | None
) -> tuple[LiveDocument, Path]:
    """An image corpus's document for an uploaded photo, as `mmsearch ingest images` makes one (name, image path,
    url), and where its file goes."""
    if place is None:
        raise UnsupportedCorpusError(
            f"corpus {schema.name!r} holds images and this service keeps no uploaded photos: set "
            "MMSEARCH_DOCUMENTS__IMAGE_DIR (and __IMAGE_BASE_URL, where that folder is served)"
        )
    unknown = sorted(set(fields) - {"name"})
    if unknown:
        raise InvalidDocumentError(f"unknown field(s) {', '.join(unknown)}: a photo takes `image` and `name`")
    ext = next((e for magic, e in _EXTENSIONS.items() if data.startswith(magic)), ".img")
    stored = f"{schema.name}-{doc_id}{ext}"
    name = (fields.get("name") or Path(filename).name or stored).strip()
    path = place.folder / stored
    url = f"{place.base_url.rstrip('/')}/{stored}"
    return LiveDocument(doc_id, {"name": name, "image": str(path), "url": url}), path


def check_document(schema: CorpusSchema, doc_id: int, body: Any, *, max_bytes: int) -> LiveDocument:
    """The document as it will be stored, or the reason it cannot be (422 naming the field, 413 over the limit)."""
    if schema.kind == "documents":
        return _check_long_document(schema, doc_id, body, max_bytes=max_bytes)
    if schema.kind != "qa":
        raise UnsupportedCorpusError(
            f"corpus {schema.name!r} is an image corpus ({schema.meta.model_key}): upload each photo with a "
            "multipart PUT (field `image`, optional `name`), not as JSON"
        )
    if not isinstance(body, dict):
        raise InvalidDocumentError(f"a document is a JSON object of its fields, not {type(body).__name__}")
    size = len(json.dumps(body, ensure_ascii=False).encode())
    if size > max_bytes:
        raise DocumentTooLargeError(f"document {doc_id} is {size} bytes; the limit is {max_bytes}")
    row = normalise({**body, "id": doc_id}, _QA_OPTIONS, 0, f"document {doc_id}")
    if isinstance(row, Reject):
        raise InvalidDocumentError(f"{row.where}: {row.reason}: {row.detail}")
    fields = row.model_dump(exclude={"id"})
    extra = sorted(set(body) - set(fields) - {"title"})
    if extra:
        # The ingest would drop them silently; a live write says so instead of storing less than was sent.
        raise InvalidDocumentError(
            f"unknown field(s) {', '.join(extra)}: a {schema.kind} document has {sorted(fields)}"
        )
    live = LiveDocument(doc_id, fields)
    live.check_fits(schema)
    return live


def _check_long_document(schema: CorpusSchema, doc_id: int, body: Any, *, max_bytes: int) -> LiveDocument:
    """A document corpus's document: any fields, kept as sent (as `ingest text` keeps a row's), whose filter fields
    must fit and none of which may be one mmsearch keeps itself. Its template's text is checked when it is split
    (writes.DocumentsService._check_passages)."""
    if not isinstance(body, dict):
        raise InvalidDocumentError(f"a document is a JSON object of its fields, not {type(body).__name__}")
    size = len(json.dumps(body, ensure_ascii=False).encode())
    if size > max_bytes:
        raise DocumentTooLargeError(f"document {doc_id} is {size} bytes; the limit is {max_bytes}")
    if doc_id > MAX_DOCUMENT_ID:
        raise InvalidDocumentError(f"id {doc_id} is above {MAX_DOCUMENT_ID}, the largest of a document corpus")
    taken = sorted({"id", "_id", "queryid", *CHUNK_FIELDS} & set(body))
    if taken:
        raise InvalidDocumentError(f"field {taken[0]!r} is mmsearch's own in a document corpus: rename it")
    live = LiveDocument(doc_id, dict(body))
    live.check_fits(schema)
    return live
