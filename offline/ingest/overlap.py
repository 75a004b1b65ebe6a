"""Filling Milvus while the model encodes: each shard the encoder finishes is upserted into the new collection
by the push's thread, so the store writes hide behind the encoding instead of following it.

The encoder hands shard numbers over a small bounded queue (`ShardFeed.put`, its on_shard callback): it waits
only if the fill falls `depth` shards behind. After encoding, `finish` adds the shards an earlier run had
encoded, then ends the feed; `abort` ends it with an error, and the push drops the half-built collection.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping

from offline.encode.manifest import read_manifest
from offline.encode.pipeline import put_until_stopped
from offline.encode.shards import read_shard
from offline.preprocess.records import CorpusRow
from offline.push.errors import PushError
from offline.push.milvus_push import FillSpec, entity_batches, milvus_client

_END = -1


class ShardFeed:
    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue[int] = queue.Queue(maxsize=depth)
        self._fed: set[int] = set()
        self._stopped = threading.Event()  # the push takes no more shards (done, refused, failed, unchanged)
        self._aborted = False

    def put(self, index: int) -> None:
        """A finished shard; waits while the fill is `depth` shards behind, never once the push has stopped."""
        if put_until_stopped(self._queue, index, self._stopped):
            self._fed.add(index)

    def finish(self, shards: list[int]) -> None:
        for index in shards:
            if index not in self._fed:  # encoded by an earlier, interrupted run
                self.put(index)
        self.put(_END)

    def abort(self) -> None:
        self._aborted = True
        self.put(_END)

    def stopped(self) -> None:
        """Called when the push returns or fails: the encoder must not wait for it any more."""
        self._stopped.set()

    def fill(self, spec: FillSpec, rows: Mapping[int, CorpusRow]) -> None:
        """The push's fill: upserts shards as they arrive, until the feed ends."""
        with milvus_client(spec.settings) as client:
            while (index := self._queue.get()) != _END:
                manifest = read_manifest(spec.vectors)  # the encoder records a shard before handing it over
                shard = next((s for s in manifest.shards if s.index == index), None) if manifest else None
                if shard is None:
                    raise PushError(f"{spec.vectors}: shard {index} was handed over but is not in vectors.json")
                ids, vectors = read_shard(spec.vectors, shard, spec.manifest.dim)
                for batch in entity_batches(spec, ids, vectors, rows):
                    client.upsert(spec.collection, batch)
        if self._aborted:
            raise PushError("encoding stopped before every shard was written; the new collection is dropped")
