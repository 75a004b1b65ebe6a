"""The documents API: `/corpora/{corpus}/...`, scope `documents`, limited to the key's corpora.

`wait=true` (default) answers once the write is searchable through this service (200); `wait=false` answers 202
with the change id to poll at `GET /corpora/{corpus}/changes/{change}`. A `version` (an integer the client owns)
makes retries and replays safe: an older one is refused with 409 and nothing written, the same one again repeats
the first answer. Without a version the last write accepted wins.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUpload

from services.search.api_models import ErrorBody
from services.search.auth.route import needs
from services.search.documents.errors import InvalidDocumentError
from services.search.documents.schema import document_id
from services.search.documents.writes import DocumentsService, ItemResult, WriteItem, single
from services.search.uploads import read_image

_SCOPE = needs("documents", corpus_param="corpus")
Wait = Annotated[bool, Query(description="Answer once the write is searchable (true) or at once with 202 (false).")]
Version = Annotated[
    int | None, Query(ge=0, le=2**63 - 1, description="The document's version, owned by the client (see above).")
]


async def _service(request: Request) -> DocumentsService:  # async: no worker thread per request (app.py)
    svc: DocumentsService = request.app.state.documents
    return svc


Docs = Annotated[DocumentsService, Depends(_service)]


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["upsert", "delete"]
    id: str | int = Field(description="The document's id: an integer 0..2^63-1 (as a number or a string).")
    document: dict[str, Any] | None = Field(default=None, description="The fields (upsert only).")
    version: int | None = Field(default=None, ge=0, le=2**63 - 1)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(min_length=1)


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown corpus (the message lists them), document or change"},
    409: {"model": ErrorBody, "description": "stale_version: a higher version was accepted; nothing was written"},
    413: {"model": ErrorBody, "description": "A document or the body over its limit"},
    422: {"model": ErrorBody, "description": "A field missing or of the wrong type, a bad id, a repeated id"},
    503: {
        "model": ErrorBody,
        "description": "A dependency is down (named). Before the write is accepted nothing is written; with "
        "wait=true past its time-out the write is accepted and stays pending (the message gives its change)",
    },
}


_PUT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "description": "The document's fields, as a row of `mmsearch ingest`."}
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, GIF, WebP or BMP."},
                    "name": {"type": "string", "description": "Its name (default: the file's)."},
                },
            }
        },
    },
}


async def _put_item(request: Request, doc_id: int, version: int | None, upload_mb: int) -> WriteItem:
    """The write a PUT carries: JSON fields, or a photo upload (multipart)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("image")
        if not isinstance(upload, StarletteUpload):
            raise InvalidDocumentError("a photo upload carries its file in the form field `image`")
        data = await read_image(upload, upload_mb)  # type: ignore[arg-type]  # FastAPI's UploadFile is Starlette's
        fields = {k: v for k, v in form.multi_items() if k != "image" and isinstance(v, str)}
        return WriteItem("upsert", doc_id, version, fields, image=data, filename=upload.filename or "")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidDocumentError(
            "the body is not JSON: send the document's fields as a JSON object (Content-Type: application/json), "
            "or a photo as multipart/form-data"
        ) from exc
    return WriteItem("upsert", doc_id, version, body)


def _answer(result: ItemResult, corpus: str) -> JSONResponse:
    single(result)
    return JSONResponse({"corpus": corpus, **result.to_json()}, status_code=result.status)


def install(app: FastAPI) -> None:
    """Add the documents routes to the app (on the app itself, as its other routes: each is a GuardedRoute)."""

    @app.put(
        "/corpora/{corpus}/documents/{doc_id}",
        responses=_ERRORS,
        openapi_extra={**_SCOPE, "requestBody": _PUT_BODY},
        tags=["documents"],
    )
    async def put_document(  # noqa: PLR0917 - path, query and body parameters
        corpus: str, doc_id: str, request: Request, docs: Docs, wait: Wait = True, version: Version = None
    ) -> JSONResponse:
        """Add or replace one document: a text corpus's fields as JSON (as its ingest rows have them), or a photo
        of an image corpus as multipart (`image`, optional `name`)."""
        item = await _put_item(request, document_id(doc_id), version, docs.upload_mb)
        return _answer((await docs.write(corpus, [item], wait=wait))[0], corpus)

    @app.delete("/corpora/{corpus}/documents/{doc_id}", responses=_ERRORS, openapi_extra=_SCOPE, tags=["documents"])
    async def delete_document(
        corpus: str, doc_id: str, docs: Docs, wait: Wait = True, version: Version = None
    ) -> JSONResponse:
        """Delete one document: it is no longer found, and stays deleted (a rebuild does not bring it back)."""
        item = WriteItem("delete", document_id(doc_id), version)
        return _answer((await docs.write(corpus, [item], wait=wait))[0], corpus)

    @app.post("/corpora/{corpus}/documents:batch", responses=_ERRORS, openapi_extra=_SCOPE, tags=["documents"])
    async def batch(corpus: str, body: BatchRequest, docs: Docs, wait: Wait = True) -> JSONResponse:
        """Up to `documents.max_batch` upserts and deletes, applied in order, with a status per item: 200 when all
        are searchable, 202 when accepted and some pending (wait=false), 207 when some failed (the others applied)."""
        limit = docs.settings.max_batch
        if len(body.items) > limit:
            raise InvalidDocumentError(f"{len(body.items)} items; a batch holds at most {limit} (documents.max_batch)")
        items: list[WriteItem] = []
        for n, it in enumerate(body.items):
            try:
                doc = document_id(str(it.id))
            except InvalidDocumentError as exc:
                raise InvalidDocumentError(f"item {n}: {exc.message}") from exc
            if it.op == "upsert" and it.document is None:
                raise InvalidDocumentError(f"item {n}: an upsert needs its document")
            if it.op == "delete" and it.document is not None:
                raise InvalidDocumentError(f"item {n}: a delete takes no document")
            items.append(WriteItem(it.op, doc, it.version, it.document))
        results = await docs.write(corpus, items, wait=wait)
        statuses = {r.status for r in results}
        status = 200 if statuses == {200} else 202 if statuses <= {200, 202} else 207
        counts = {
            "applied": sum(r.status == 200 for r in results),
            "pending": sum(r.status == 202 for r in results),
            "failed": sum(r.status not in (200, 202) for r in results),
        }
        return JSONResponse(
            {"corpus": corpus, **counts, "items": [r.to_json() for r in results]},
            status_code=status,
        )

    @app.get("/corpora/{corpus}/documents/{doc_id}", responses=_ERRORS, openapi_extra=_SCOPE, tags=["documents"])
    async def get_document(corpus: str, doc_id: str, docs: Docs) -> dict[str, Any]:
        """A document's stored fields, its version, and whether a search finds it yet."""
        return await docs.document(corpus, document_id(doc_id))

    @app.get("/corpora/{corpus}/changes/{change}", responses=_ERRORS, openapi_extra=_SCOPE, tags=["documents"])
    async def get_change(corpus: str, change: int, docs: Docs) -> dict[str, Any]:
        """One accepted write: pending, applied, stale (a higher version won) or failed (with the reason)."""
        return await docs.change(corpus, change)

    @app.get("/corpora/{corpus}", responses=_ERRORS, openapi_extra=_SCOPE, tags=["documents"])
    async def get_corpus(corpus: str, docs: Docs) -> dict[str, Any]:
        """The corpus: model, fields, lexical fields, counts, writes pending and the last change applied."""
        return await docs.describe(corpus)
