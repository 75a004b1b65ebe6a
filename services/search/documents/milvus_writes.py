"""The documents API's Milvus side: each corpus's schema (through its alias), upserts and deletes by primary key,
and whether written rows are visible to a search yet.

Searches read at the collection's consistency level (Milvus' default, Bounded: a search may miss writes of the
last moments, and costs no wait on the write path). So the applier calls a write applied only once a query AT THAT
SAME LEVEL sees it: from then on every replica's search finds it (or, for a delete, no longer does).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mmsearch.chunking import DOCUMENT_FIELD, POSITION_FIELD, positions_by_document, stale_passages
from mmsearch.collection_meta import PRIMARY_KEY
from mmsearch.settings import Settings
from services.search.adapters import MilvusVectorStore
from services.search.documents.schema import CorpusSchema, schema_of
from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics

SCHEMA_SECONDS = 5.0  # a corpus's schema is re-read this often: a rebuild's new collection is picked up


class MilvusWrites(MilvusVectorStore):
    def __init__(self, settings: Settings, metrics: SearchMetrics | None = None) -> None:
        super().__init__(settings, metrics, timeout=settings.milvus.timeout_seconds, workers=4)
        self._schemas: dict[str, tuple[float, CorpusSchema | None]] = {}

    async def corpora(self) -> list[str]:
        """The corpora (aliases) this Milvus serves."""
        return await self.run(lambda client: sorted(client.list_aliases(timeout=self.timeout).get("aliases", [])))

    async def schema(self, corpus: str, *, fresh: bool = False) -> CorpusSchema | None:
        """None: no such corpus, or not one mmsearch built. While Milvus is down the last schema read is used:
        writes are still checked and accepted (the journal keeps them until Milvus is back). `fresh`: read it now
        (the applier, after a rebuild switched the corpus to a new collection)."""
        cached = self._schemas.get(corpus)
        if cached is not None and not fresh and time.monotonic() - cached[0] < SCHEMA_SECONDS:
            return cached[1]

        def go(client: Any) -> CorpusSchema | None:
            if corpus not in client.list_aliases(timeout=self.timeout).get("aliases", []):
                return None
            return schema_of(corpus, client.describe_collection(corpus, timeout=self.timeout))

        try:
            schema = await self.run(go)
        except DependencyUnavailableError:
            if cached is not None and cached[1] is not None:
                return cached[1]
            raise
        self._schemas[corpus] = (time.monotonic(), schema)
        return schema

    async def upsert(self, corpus: str, entities: Sequence[dict[str, Any]]) -> None:
        if entities:
            await self.run(lambda client: client.upsert(corpus, list(entities), timeout=self.timeout))

    async def delete(self, corpus: str, ids: Sequence[int]) -> None:
        if ids:
            await self.run(lambda client: client.delete(corpus, ids=list(ids), timeout=self.timeout))

    async def delete_passages(self, corpus: str, counts: dict[int, int], deleted: Sequence[int]) -> None:
        """A document corpus: the passages of upserted documents past their new count (a shorter new version), and
        every passage of deleted documents, in one request."""
        expr = stale_passages(counts, deleted)
        if expr:
            await self.run(lambda client: client.delete(corpus, filter=expr, timeout=self.timeout))

    async def passages_present(self, corpus: str, documents: Sequence[int]) -> dict[int, set[int]]:
        """A document corpus: the positions of each document's passages a search would find now."""
        if not documents:
            return {}
        expr = f"{DOCUMENT_FIELD} in [{', '.join(str(int(d)) for d in documents)}]"

        def go(client: Any) -> dict[int, set[int]]:
            rows = self._with_load(
                client,
                corpus,
                lambda: client.query(
                    corpus, filter=expr, output_fields=[DOCUMENT_FIELD, POSITION_FIELD], timeout=self.timeout
                ),
            )
            return positions_by_document(rows)

        return await self.run(go)

    async def flush(self, corpus: str) -> None:
        """Seal the corpus's growing segments (searched by brute force until then)."""
        await self.run(lambda client: client.flush(corpus, timeout=self.timeout))

    async def present(self, corpus: str, ids: Sequence[int]) -> set[int]:
        """Which of `ids` a search would find now (the collection's own consistency level, as searches use)."""
        if not ids:
            return set()
        expr = f"{PRIMARY_KEY} in [{', '.join(str(int(i)) for i in ids)}]"

        def go(client: Any) -> set[int]:
            rows = self._with_load(
                client,
                corpus,
                lambda: client.query(corpus, filter=expr, output_fields=[PRIMARY_KEY], timeout=self.timeout),
            )
            return {int(r[PRIMARY_KEY]) for r in rows}

        return await self.run(go)

    async def count(self, corpus: str) -> int:
        def go(client: Any) -> int:
            rows = client.query(corpus, filter="", output_fields=["count(*)"], timeout=self.timeout)
            return int(rows[0]["count(*)"])

        return await self.run(go)
