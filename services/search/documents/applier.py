"""The applier: carries each corpus's pending journal entries into MongoDB's documents and Milvus, in journal order.

One replica at a time applies a corpus: it holds the corpus's lease (journal.lease, renewed before every batch and
checked again before the batch is marked applied), so writes to one document are applied in the order they were
accepted, every replica may accept writes, and a rebuild that took the lease to read the live state sees each batch
either in it or marked afterwards with its documents kept for the rebuild's replay. A replica killed while holding
a lease leaves its entries pending; the lease runs out and another replica applies them. Applying is idempotent
(upserts and deletes by primary key, versions checked against the journal), so an entry applied again after a crash
between the stores' writes and its mark changes nothing.

Order of the two stores, so a search never shows half of a write: an upsert goes to MongoDB first (a vector found
always has its document), a delete to Milvus first (a document removed is never a hit). An entry is marked applied
once a query at the searches' consistency level sees the result (milvus_writes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mmsearch.change_journal import rebuild_running
from mmsearch.chunking import passages_settled
from mmsearch.settings import DocumentsSettings
from services.search.documents.encode import DocumentEncoder
from services.search.documents.errors import InvalidDocumentError, WriteFailedError
from services.search.documents.journal import Entry, Journal, State
from services.search.documents.milvus_writes import MilvusWrites
from services.search.documents.schema import CorpusSchema, LiveDocument
from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 5.0
IDLE_HAND_BACK_SECONDS = 1.0  # a corpus's lease is handed back after this long with nothing to apply
MAX_OUTCOMES = 100_000  # recent outcomes kept for waiting writes (a write waits at most documents.wait_seconds)


@dataclass(frozen=True)
class Plan:
    """What one batch of entries does: the last effective write per document, and which entries go stale."""

    upserts: list[Entry]
    deletes: list[int]
    applied: list[int]  # entries whose effect is in the batch (superseded ones in the same batch included)
    stale: list[tuple[int, str]]  # (seq, reason)


def plan_batch(entries: Sequence[Entry], applied_versions: dict[int, int]) -> Plan:
    """Entries in journal order. A versioned entry older than the document's highest version (applied before, or
    earlier in this batch) goes stale; the same version again is a no-op (applied, nothing rewritten). Without a
    version the later entry wins."""
    versions = dict(applied_versions)
    last: dict[int, Entry] = {}
    applied: list[int] = []
    stale: list[tuple[int, str]] = []
    for e in entries:
        if e.version is not None:
            current = versions.get(e.doc_id)
            if current is not None and e.version < current:
                stale.append((e.seq, f"version {e.version} is older than version {current} of document {e.doc_id}"))
                continue
            if current is not None and e.version == current:
                applied.append(e.seq)  # a replay: the document already holds this version
                continue
            versions[e.doc_id] = e.version
        last[e.doc_id] = e
        applied.append(e.seq)
    upserts = [e for e in last.values() if e.op == "upsert"]
    deletes = [e.doc_id for e in last.values() if e.op == "delete"]
    return Plan(upserts, deletes, applied, stale)


def misfits(entries: Sequence[Entry], schema: CorpusSchema) -> dict[int, str]:
    """Upserts the corpus's collection can no longer hold (seq -> why): accepted against one collection, pending
    while a rebuild switched the corpus to one with other filter or lexical fields. They end failed, not retried:
    Milvus would refuse them every time, and the corpus's later writes would wait behind them."""
    out: dict[int, str] = {}
    for e in entries:
        if e.op != "upsert":
            continue
        try:
            LiveDocument(e.doc_id, e.document or {}).check_fits(schema)
        except InvalidDocumentError as exc:
            out[e.seq] = f"the corpus was rebuilt with other fields after this write was accepted: {exc.message}"
    return out


class Applier:
    def __init__(
        self,
        journal: Journal,
        milvus: MilvusWrites,
        encoder: DocumentEncoder,
        settings: DocumentsSettings,
        metrics: SearchMetrics,
    ) -> None:
        self.journal = journal
        self.milvus = milvus
        self.encoder = encoder
        self.settings = settings
        self.metrics = metrics
        self.owner = uuid.uuid4().hex  # this replica, in the leases
        self.wake = asyncio.Event()
        self.last_error: dict[str, DependencyUnavailableError] = {}  # corpus -> why its entries are still pending
        self._held: set[str] = set()  # corpora whose lease this replica holds
        self._idle_since: dict[str, float] = {}  # held corpora with nothing pending: since when (monotonic)
        self._rebuilt: dict[str, str] = {}  # corpus -> the collection its last rebuild switched to, when last seen
        self._gauged: set[str] = set()  # corpora with a non-zero pending gauge here
        self._unflushed: dict[str, tuple[int, float]] = {}  # corpus -> (rows applied since its flush, first at)
        # What this replica settled lately (seq -> state, reason), and an event set after each batch: writes
        # waiting here learn their outcome without asking MongoDB.
        self.outcomes: OrderedDict[int, tuple[State, str]] = OrderedDict()
        self.settled = asyncio.Event()

    async def run(self) -> None:
        """Forever: apply what is pending, then wait for a local write or the poll interval (longer, up to
        MAX_BACKOFF_SECONDS, while a store is down: one warning when it goes, one line when it is back)."""
        failing: str | None = None
        pause = self.settings.poll_seconds
        while True:
            self.wake.clear()  # before looking: a write accepted during the pass wakes the next wait
            try:
                busy = await self.step()
            except DependencyUnavailableError as exc:
                if failing is None:
                    log.warning("documents applier: %s; retrying until it answers", exc)
                failing, busy = str(exc), False
                pause = min(pause * 2, MAX_BACKOFF_SECONDS)
            except Exception:
                log.exception("documents applier: unexpected error; retrying")
                busy = False
            else:
                if failing is not None:
                    log.info("documents applier: the stores answer again")
                failing, pause = None, self.settings.poll_seconds
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), pause)

    async def step(self) -> bool:
        """One pass over the corpora with pending entries; True when it applied something (look again at once)."""
        pending = await self.journal.pending_corpora()
        for corpus in self._gauged - set(pending):
            self.metrics.documents_pending.labels(corpus).set(0)
        self._gauged = set(pending)
        now = time.monotonic()
        for corpus in self._held - set(pending):
            # Idle for a while: a rebuild waiting for the lease gets it now, not when it runs out. (Not after every
            # batch: a steady stream of writes would pay a release and a take each time.)
            if now - self._idle_since.setdefault(corpus, now) >= IDLE_HAND_BACK_SECONDS:
                await self._hand_back(corpus)
        for corpus in pending:
            self._idle_since.pop(corpus, None)
        busy = False
        for corpus, count in pending.items():
            self.metrics.documents_pending.labels(corpus).set(count)
            lease = await self.journal.lease(corpus, self.owner, self.settings.lease_seconds)
            if lease is None:
                await self._hand_back(corpus)  # reserved by a rebuild (or taken by another replica)
                continue
            self._held.add(corpus)
            try:
                busy = await self.apply(corpus, rebuilt_to=str(lease.get("rebuilt_to", ""))) or busy
            except DependencyUnavailableError as exc:
                if corpus not in self.last_error:  # once per outage, not once per pass
                    log.warning("documents of %s stay pending (%d) until it answers: %s", corpus, count, exc)
                self.last_error[corpus] = exc
            else:
                if self.last_error.pop(corpus, None) is not None:
                    log.info("documents of %s are applied again", corpus)
        await self._flush_due()
        return busy

    def _applied_rows(self, corpus: str, rows: int) -> None:
        count, since = self._unflushed.get(corpus, (0, time.monotonic()))
        self._unflushed[corpus] = (count + rows, since)

    async def _flush_due(self) -> None:
        for corpus, (count, since) in list(self._unflushed.items()):
            if count >= self.settings.flush_rows or time.monotonic() - since >= self.settings.flush_seconds:
                try:
                    await self.milvus.flush(corpus)
                except DependencyUnavailableError as exc:
                    log.debug("flushing %s failed (%s); next pass", corpus, exc)
                    continue
                del self._unflushed[corpus]

    async def apply(self, corpus: str, *, rebuilt_to: str = "") -> bool:
        """One batch of the corpus's pending entries. `rebuilt_to`: the collection the corpus's last rebuild
        switched to, as its lease says; when it changes, the schema is read afresh, not from the cache."""
        entries = await self.journal.pending(corpus, self.settings.apply_batch)
        if not entries:
            return False
        schema = await self.milvus.schema(corpus, fresh=self._rebuilt.get(corpus) != rebuilt_to)
        self._rebuilt[corpus] = rebuilt_to
        if schema is None:
            reason = f"corpus {corpus} has no Milvus collection (it was dropped after the write was accepted)"
            await self._fail(corpus, dict.fromkeys((e.seq for e in entries), reason))
            return True
        refused = misfits(entries, schema)
        upserts = [e for e in entries if e.op == "upsert" and e.seq not in refused]
        passages: dict[int, list[tuple[int, str]]] = {}  # a document corpus: each upsert's (position, passage)
        if schema.kind == "documents":
            passages, unsplit = await self._split(schema, upserts)
            refused.update(unsplit)
            upserts = [e for e in upserts if e.seq not in unsplit]
        vectors, unreadable = await self._vectors(schema, upserts, passages)
        refused.update(unreadable)
        if refused:
            await self._fail(corpus, refused)
            entries = [e for e in entries if e.seq not in refused]
            if not entries:
                return True
        versioned = sorted({e.doc_id for e in entries if e.version is not None})
        plan = plan_batch(entries, await self.journal.applied_versions(corpus, versioned) if versioned else {})
        entities = self._entities(schema, plan.upserts, vectors, passages)
        await self.journal.write_documents(corpus, plan.upserts, [])
        await self.milvus.upsert(corpus, entities)
        if schema.kind == "documents":
            # A document's passages are upserted together, then those past its new end deleted: at every moment
            # the document is found (for an instant also by a passage its new version no longer has).
            counts = {e.doc_id: len(passages[e.seq]) for e in plan.upserts}
            await self.milvus.delete_passages(corpus, counts, plan.deletes)
            await self._until_passages_visible(corpus, counts, plan.deletes)
        else:
            await self.milvus.delete(corpus, plan.deletes)
            await self._until_visible(corpus, [e.doc_id for e in plan.upserts], plan.deletes)
        await self.journal.write_documents(corpus, [], plan.deletes)
        lease = await self.journal.lease(corpus, self.owner, self.settings.lease_seconds)
        if lease is None:
            # A rebuild reserved the corpus (or the lease ran out) while this batch was written: it may have read
            # the live state already, so the batch stays pending and is applied again to whatever serves next.
            log.info("the lease on %s passed on during a batch; its %d change(s) stay pending", corpus, len(entries))
            await self._hand_back(corpus)
            return False
        # The batch is searchable and this replica still holds the corpus: waiting writes are told now, and the
        # journal is marked after (a mark costs as much as the documents' write; the clients' next writes are
        # encoded meanwhile). A crash before the mark leaves the entries pending: applied again, changing nothing.
        self._tell([(seq, "applied", "") for seq in plan.applied] + [(seq, "stale", r) for seq, r in plan.stale])
        # While a rebuild runs, the documents stay in the journal: it replays them into its new collection.
        await self.journal.mark(plan.applied, "applied", keep_document=rebuild_running(lease))
        self._applied_rows(corpus, len(entities) + len(plan.deletes))
        for seq, reason in plan.stale:
            await self.journal.mark([seq], "stale", reason)
        self.metrics.documents_applied.labels(corpus, "applied").inc(len(plan.applied))
        self.metrics.documents_applied.labels(corpus, "stale").inc(len(plan.stale))
        log.info(
            "applied %d change(s) to %s: %d upserted, %d deleted, %d stale",
            len(plan.applied),
            corpus,
            len(plan.upserts),
            len(plan.deletes),
            len(plan.stale),
        )
        return True

    @staticmethod
    def _entities(
        schema: CorpusSchema,
        upserts: list[Entry],
        vectors: dict[int, list[float]],
        passages: dict[int, list[tuple[int, str]]],
    ) -> list[dict[str, Any]]:
        """The Milvus rows of a batch's upserts: one per document, or one per passage of a document corpus's (its
        vector is its passages' vectors end to end)."""
        if schema.kind != "documents":
            return [LiveDocument(e.doc_id, e.document or {}).entity(schema, vectors[e.seq]) for e in upserts]
        dim = schema.meta.dim
        out: list[dict[str, Any]] = []
        for e in upserts:
            flat = vectors[e.seq]
            split = [flat[i * dim : (i + 1) * dim] for i in range(len(passages[e.seq]))]
            out += LiveDocument(e.doc_id, e.document or {}).passage_entities(schema, passages[e.seq], split)
        return out

    async def _split(
        self, schema: CorpusSchema, upserts: list[Entry]
    ) -> tuple[dict[int, list[tuple[int, str]]], dict[int, str]]:
        """A document corpus's upserts split into passages as the corpus records (by seq), and those that cannot be
        (seq -> why: more passages than a document may have under a split a rebuild changed)."""
        passages: dict[int, list[tuple[int, str]]] = {}
        failed: dict[int, str] = {}
        for e in upserts:
            try:
                passages[e.seq] = await asyncio.to_thread(
                    self.encoder.passages, schema, LiveDocument(e.doc_id, e.document or {})
                )
            except InvalidDocumentError as exc:
                failed[e.seq] = exc.message
        return passages, failed

    async def _vectors(
        self, schema: CorpusSchema, upserts: list[Entry], passages: dict[int, list[tuple[int, str]]]
    ) -> tuple[dict[int, list[float]], dict[int, str]]:
        """Each upsert's vector (by seq; a document corpus's: its passages' end to end), and the upserts that cannot
        have one (seq -> why). A vector made for another encoding of the corpus (accepted before a rebuild changed
        its model or split, and pending through the switch) is made again with the corpus's own; a photo whose
        file is gone by then cannot be."""
        vectors = {e.seq: e.vector or [] for e in upserts}

        def size(e: Entry) -> int:
            return schema.meta.dim * (len(passages[e.seq]) if schema.kind == "documents" else 1)

        again = [e for e in upserts if len(vectors[e.seq]) != size(e) or e.encoded_with not in ("", schema.encoding)]
        failed: dict[int, str] = {}
        if not again:
            return vectors, failed
        log.info(
            "%d pending write(s) to %s were encoded for another model; encoding them again", len(again), schema.name
        )
        try:
            encoded = await self.encoder.encode_documents(
                schema,
                [LiveDocument(e.doc_id, e.document or {}) for e in again],
                passages=[passages[e.seq] for e in again] if passages else None,
            )
            vectors.update({e.seq: v for e, v in zip(again, encoded.vectors, strict=True)})
        except WriteFailedError:
            for e in again:  # one at a time: only the unreadable ones fail
                try:
                    one = await self.encoder.encode_documents(
                        schema,
                        [LiveDocument(e.doc_id, e.document or {})],
                        passages=[passages[e.seq]] if passages else None,
                    )
                    vectors[e.seq] = one.vectors[0]
                except WriteFailedError as exc:
                    failed[e.seq] = exc.message
        return vectors, failed

    async def _fail(self, corpus: str, failed: dict[int, str]) -> None:
        """Settle entries that can never be applied (seq -> why): marked failed (one write per reason), told to
        waiting writes, logged and counted."""
        log.warning("%d write(s) to %s failed, e.g. change %d: %s", len(failed), corpus, *next(iter(failed.items())))
        by_reason: dict[str, list[int]] = {}
        for seq, reason in failed.items():
            by_reason.setdefault(reason, []).append(seq)
        for reason, seqs in by_reason.items():
            await self.journal.mark(seqs, "failed", reason)
        self._tell([(seq, "failed", reason) for seq, reason in failed.items()])
        self.metrics.documents_applied.labels(corpus, "failed").inc(len(failed))

    def _tell(self, settled: list[tuple[int, State, str]]) -> None:
        for seq, state, reason in settled:
            self.outcomes[seq] = (state, reason)
        while len(self.outcomes) > MAX_OUTCOMES:
            self.outcomes.popitem(last=False)
        event, self.settled = self.settled, asyncio.Event()
        event.set()  # wakes every write waiting now; later waiters wait on the new event

    async def _until_visible(self, corpus: str, upserted: list[int], deleted: list[int]) -> None:
        async def seen() -> bool:
            present = await self.milvus.present(corpus, [*upserted, *deleted])
            return set(upserted) <= present and not present & set(deleted)

        await self._until(corpus, seen)

    async def _until_passages_visible(self, corpus: str, counts: dict[int, int], deleted: list[int]) -> None:
        """A document corpus's batch is visible when each upserted document has exactly its new passages and each
        deleted one none."""

        async def seen() -> bool:
            return passages_settled(await self.milvus.passages_present(corpus, [*counts, *deleted]), counts, deleted)

        await self._until(corpus, seen)

    async def _until(self, corpus: str, seen: Callable[[], Awaitable[bool]]) -> None:
        """Until a query at the searches' consistency level sees the batch (`seen`), within half the lease: the
        batch is done (or given up, to be retried) before the lease could pass on."""
        loop = asyncio.get_running_loop()
        wait = self.settings.lease_seconds / 2
        deadline = loop.time() + wait
        delay = 0.01
        while not await seen():
            if loop.time() > deadline:
                raise DependencyUnavailableError("milvus", f"writes to {corpus} not visible after {wait:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _hand_back(self, corpus: str) -> None:
        self._idle_since.pop(corpus, None)
        if corpus in self._held:
            self._held.discard(corpus)
            with contextlib.suppress(DependencyUnavailableError):  # else the lease runs out by itself
                await self.journal.release(corpus, self.owner)

    async def release(self) -> None:
        """Hand this replica's leases back at shutdown, so another replica takes the corpora at once."""
        for corpus in list(self._held):
            with contextlib.suppress(DependencyUnavailableError):  # else the lease runs out by itself
                await self.journal.release(corpus, self.owner)
