"""Accepting writes: check every document, encode them, add them to the journal, and (wait=true) wait until the
applier has made them searchable.

Nothing is written before every check has passed and every vector is computed: a refused item, a model server or
tokenizer that is down, or MongoDB down means no journal entry, so no half-accepted write. Once `Journal.append`
returns, the write is acknowledged and cannot be lost; what follows (Milvus) may be late but not lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch.files import atomic_binary_writer
from mmsearch.settings import DocumentsSettings
from services.search.documents.applier import Applier
from services.search.documents.encode import DocumentEncoder
from services.search.documents.errors import (
    ChangeNotFoundError,
    CorpusNotFoundError,
    DocumentNotFoundError,
    InvalidDocumentError,
    StaleVersionError,
    UnsupportedCorpusError,
    WriteFailedError,
)
from services.search.documents.journal import Entry, Journal, NewWrite, Op
from services.search.documents.milvus_writes import MilvusWrites
from services.search.documents.schema import CorpusSchema, LiveDocument, PhotoPlace, check_document, photo_document
from services.search.errors import DependencyUnavailableError, SearchError

JOURNAL_POLL_SECONDS = 0.25  # a waiting write asks the journal this often when its replica's applier is quiet


@dataclass(frozen=True)
class WriteItem:
    op: Op
    doc_id: int
    version: int | None = None
    body: Any = None  # the document's fields (upsert)
    image: bytes | None = None  # an uploaded photo (an image corpus's upsert), with its file name
    filename: str = ""


@dataclass
class ItemResult:
    id: int
    op: Op
    status: int  # 200 applied, 202 accepted and pending, 4xx refused, 503 still pending at the wait's end
    change: int | None = None
    state: str | None = None
    version: int | None = None
    truncated: bool = False
    error: SearchError | None = None  # why not 200/202, in the one error shape

    def refuse(self, exc: SearchError, state: str | None = None) -> None:
        self.status, self.error = exc.status_code, exc
        if state is not None:
            self.state = state

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": str(self.id), "op": self.op, "status": self.status}
        for key, value in (("change", self.change), ("state", self.state), ("version", self.version)):
            if value is not None:
                out[key] = value
        if self.truncated:
            out["truncated"] = True  # the text was longer than the model's window: its vector encodes the start
        if self.error is not None:
            out["error"], out["message"] = self.error.kind, self.error.message
            dependency = getattr(self.error, "dependency", None)
            if dependency is not None:
                out["dependency"] = dependency
        return out


@dataclass
class _Pending:
    item: WriteItem
    result: ItemResult
    document: LiveDocument | None = None
    seq: int | None = None  # the journal entry this item waits for (new, or the one a replay repeats)
    vector: list[float] | None = None
    passages: list[tuple[int, str]] | None = None  # a document corpus's document, split (checked before encoding)
    encoded_with: str = ""  # the corpus's encoding the vector was made with
    photo_file: Path | None = None  # where an uploaded photo is kept


class DocumentsService:
    def __init__(
        self,
        settings: DocumentsSettings,
        journal: Journal,
        milvus: MilvusWrites,
        encoder: DocumentEncoder,
        applier: Applier,
        *,
        upload_mb: int = 8,  # the largest photo upload (search.max_upload_mb)
    ) -> None:
        self.settings = settings
        self.upload_mb = upload_mb
        self.journal = journal
        self.milvus = milvus
        self.encoder = encoder
        self.applier = applier

    def close(self) -> None:
        self.journal.close()
        self.milvus.close()

    async def schema(self, corpus: str) -> CorpusSchema:
        schema = await self.milvus.schema(corpus)
        if schema is None:
            known = await self.milvus.corpora()
            raise CorpusNotFoundError(
                f"no corpus {corpus!r}; the corpora are: {', '.join(known) or 'none (ingest one first)'}"
            )
        return schema

    # ---- writes -------------------------------------------------------------------------------------------

    async def write(self, corpus: str, items: Sequence[WriteItem], *, wait: bool) -> list[ItemResult]:
        schema = await self.schema(corpus)
        twice = sorted(i for i, n in Counter(i.doc_id for i in items).items() if n > 1)
        if twice:
            raise InvalidDocumentError(f"id(s) {', '.join(map(str, twice))} appear more than once in one batch")
        work = [_Pending(i, ItemResult(i.doc_id, i.op, 0, version=i.version)) for i in items]
        for p in work:
            if p.item.op == "upsert":
                try:
                    self._check(schema, p)
                except SearchError as exc:
                    p.result.refuse(exc)
        if schema.kind == "documents":
            await self._check_passages(schema, [p for p in work if p.document is not None and p.result.error is None])
        await self._check_versions(corpus, [p for p in work if p.result.error is None])
        todo = [p for p in work if p.result.error is None and p.seq is None]
        await self._encode(schema, [p for p in todo if p.document is not None])
        for p in todo:
            if p.photo_file is not None and p.item.image is not None:
                # Before the journal: an acknowledged photo's file exists; a write refused after this leaves a file
                # that the next write of the id replaces.
                await asyncio.to_thread(_keep_photo, p.photo_file, p.item.image)
        if todo:
            entries = await self.journal.append(corpus, [self._new_write(p) for p in todo])
            for p, e in zip(todo, entries, strict=True):
                p.seq, p.result.change = e.seq, e.seq
            self.applier.wake.set()
        waiting = [p for p in work if p.seq is not None and p.result.error is None]
        if wait:
            await self._wait(corpus, waiting)
        else:
            for p in waiting:
                p.result.state = p.result.state or "pending"
                p.result.status = 200 if p.result.state == "applied" else 202
        return [p.result for p in work]

    async def _check_passages(self, schema: CorpusSchema, work: list[_Pending]) -> None:
        """A document corpus's documents split as the ingest splits them: one that cannot be (more passages than a
        document may have) is refused here, alone, with the reason."""
        for p in work:
            assert p.document is not None
            try:
                p.passages = await asyncio.to_thread(self.encoder.passages, schema, p.document)
            except SearchError as exc:
                p.result.refuse(exc)

    async def _check_versions(self, corpus: str, work: list[_Pending]) -> None:
        """A version older than one accepted: 409, nothing written. The same version again: the answer of the
        write it repeats (so a retry after a lost answer is safe)."""
        versioned = [p for p in work if p.item.version is not None]
        if not versioned:
            return
        latest = await self.journal.latest(corpus, [p.item.doc_id for p in versioned], versioned=True)
        for p in versioned:
            seen = latest.get(p.item.doc_id)
            if seen is None or seen.version is None or p.item.version is None:
                continue
            if p.item.version < seen.version:
                p.result.refuse(
                    StaleVersionError(
                        f"document {p.item.doc_id} is at version {seen.version} (change {seen.seq}); version "
                        f"{p.item.version} is older: nothing was written"
                    )
                )
                p.result.change = seen.seq
            elif p.item.version == seen.version:
                p.seq, p.result.change, p.result.state = seen.seq, seen.seq, seen.state
                p.result.truncated = seen.truncated

    def _check(self, schema: CorpusSchema, p: _Pending) -> None:
        if p.item.image is None:
            p.document = check_document(
                schema, p.item.doc_id, p.item.body, max_bytes=self.settings.max_document_kb * 1024
            )
            return
        if schema.kind != "images":
            raise UnsupportedCorpusError(f"corpus {schema.name!r} holds text: send the document as JSON, not a file")
        place = self.settings.image_dir
        p.document, p.photo_file = photo_document(
            schema,
            p.item.doc_id,
            p.item.body or {},
            p.item.image,
            filename=p.item.filename,
            place=PhotoPlace(place, self.settings.image_base_url) if place is not None else None,
        )

    async def _encode(self, schema: CorpusSchema, work: list[_Pending]) -> None:
        if not work:
            return
        documents = [p.document for p in work if p.document is not None]
        split = [p.passages or [] for p in work] if schema.kind == "documents" else None
        encoded = await self.encoder.encode_documents(
            schema, documents, images=[p.item.image or b"" for p in work], passages=split
        )
        for p, vector, cut in zip(work, encoded.vectors, encoded.truncated, strict=True):
            p.vector = vector
            p.encoded_with = schema.encoding
            p.result.truncated = cut

    @staticmethod
    def _new_write(p: _Pending) -> NewWrite:
        if p.item.op == "delete":
            return NewWrite(p.item.doc_id, "delete", p.item.version)
        assert p.document is not None
        return NewWrite(
            p.item.doc_id, "upsert", p.item.version, p.document.fields, p.vector, p.result.truncated, p.encoded_with
        )

    async def _wait(self, corpus: str, work: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.wait_seconds
        open_ = {p.seq: p for p in work if p.seq is not None}
        ask_journal = True  # the entries may be settled already (a replayed write)
        while open_:
            event = self.applier.settled  # taken before looking: news that comes while looking still wakes us
            # Entries this replica's applier settled are known here; others (another replica applied them) are
            # asked of the journal when no local news came for a while: waiters do not poll MongoDB in a loop.
            for seq in list(open_):
                outcome = self.applier.outcomes.get(seq)
                if outcome is not None:
                    _settle(open_.pop(seq).result, *outcome)
            if open_ and ask_journal:
                for seq, entry in (await self.journal.get(list(open_))).items():
                    if entry.state != "pending":
                        _settle(open_.pop(seq).result, entry.state, entry.reason)
            remaining = deadline - loop.time()
            if not open_ or remaining <= 0:
                break
            try:
                await asyncio.wait_for(event.wait(), min(remaining, JOURNAL_POLL_SECONDS))
                ask_journal = False
            except TimeoutError:
                ask_journal = True
        why = self.applier.last_error.get(corpus)
        for seq, p in open_.items():
            dep = why.dependency if why is not None else "milvus"
            reason = why.reason if why is not None else f"not searchable within {self.settings.wait_seconds:g}s"
            p.result.refuse(
                DependencyUnavailableError(
                    dep,
                    f"{reason}. The write is accepted as change {seq} and stays pending: it is applied when {dep} "
                    f"answers (GET /corpora/{corpus}/changes/{seq})",
                ),
                state="pending",
            )

    # ---- reads --------------------------------------------------------------------------------------------

    def _known(self, entry: Entry | None) -> Entry | None:
        """`entry` with what this replica's applier knows and the journal may not yet say (it tells waiting writes
        before it marks the journal)."""
        if entry is None or entry.state != "pending":
            return entry
        outcome = self.applier.outcomes.get(entry.seq)
        return entry if outcome is None else dataclasses.replace(entry, state=outcome[0], reason=outcome[1])

    async def document(self, corpus: str, doc_id: int) -> dict[str, Any]:
        await self.schema(corpus)
        latest = self._known((await self.journal.latest(corpus, [doc_id], versioned=False)).get(doc_id))
        stored = await self.journal.document(corpus, doc_id)
        if latest is not None and latest.op == "delete" and (latest.state == "applied" or stored is None):
            raise DocumentNotFoundError(f"document {doc_id} of {corpus} was deleted (change {latest.seq})")
        if stored is None and (latest is None or latest.op != "upsert"):
            raise DocumentNotFoundError(f"no document {doc_id} in corpus {corpus}")
        if latest is not None and latest.op == "upsert" and latest.state == "pending":
            full = (await self.journal.get([latest.seq], light=False))[latest.seq]
            fields = full.document or {}
        else:
            fields = stored or {}
        versioned = (await self.journal.latest(corpus, [doc_id], versioned=True)).get(doc_id)
        return {
            "id": str(doc_id),
            "corpus": corpus,
            "document": fields,
            "version": versioned.version if versioned is not None else None,
            "change": latest.seq if latest is not None else None,
            "state": latest.state if latest is not None else "ingested",
            # Ingested documents, and live ones once applied, are what a search finds.
            "searchable": latest is None or latest.state == "applied",
        }

    async def change(self, corpus: str, seq: int) -> dict[str, Any]:
        await self.schema(corpus)
        entry = self._known((await self.journal.get([seq])).get(seq))
        if entry is None or entry.corpus != corpus:
            raise ChangeNotFoundError(f"no change {seq} for corpus {corpus}")
        return change_json(entry)

    async def describe(self, corpus: str) -> dict[str, Any]:
        schema = await self.schema(corpus)
        progress = await self.journal.progress(corpus)
        return {
            **schema.describe(),
            "documents": await self.journal.count_documents(corpus),
            "vectors": await self.milvus.count(corpus),
            "changes": progress.by_state,
            "pending": progress.pending,
            "lastApplied": change_json(progress.last_applied) if progress.last_applied else None,
        }


def _settle(result: ItemResult, state: str, reason: str) -> None:
    result.state = state
    if state == "applied":
        result.status = 200
    elif state == "stale":
        result.refuse(StaleVersionError(f"{reason}: nothing was written"))
    else:
        result.refuse(WriteFailedError(reason or f"the write ended {state}"))


def change_json(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "change": entry.seq,
        "corpus": entry.corpus,
        "id": str(entry.doc_id),
        "op": entry.op,
        "version": entry.version,
        "state": entry.state,
        "acceptedAt": entry.accepted_at.isoformat() if entry.accepted_at else None,
        "appliedAt": entry.applied_at.isoformat() if entry.applied_at and entry.state != "pending" else None,
    }
    if entry.reason:
        out["reason"] = entry.reason
    if entry.truncated:
        out["truncated"] = True
    return out


def single(result: ItemResult) -> ItemResult:
    """A one-document write's result, or its refusal raised (so the route answers in the one error shape)."""
    if result.error is not None:
        raise result.error
    return result


def _keep_photo(path: Path, data: bytes) -> None:
    with atomic_binary_writer(path) as out:
        out.write(data)
