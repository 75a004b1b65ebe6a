"""`push milvus`: build a new physical collection, verify it, then switch the corpus alias to it.

Searches go through the alias, so they see the previous collection until the new one is complete (upserted
including the tail batch, flushed, indexed, loaded, counted). Only after the switch are older physical
collections of the corpus dropped; any failure before it drops the half-built collection and leaves the alias
where it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from mmsearch import stores
from mmsearch.collection_meta import (
    PRIMARY_KEY,
    CollectionMeta,
    describe_chunking,
    from_properties,
    physical_name,
    sparse_field,
    to_properties,
)
from mmsearch.settings import MilvusSettings
from offline.encode.manifest import IndexManifest, file_sha256
from offline.encode.shards import iter_shards, open_vectors
from offline.preprocess.records import CorpusError, CorpusRow, read_corpus
from offline.push.errors import ModelMismatchError, PushError, StoreUnavailableError
from offline.push.lexical import Analyzer, LexicalField, check_store
from offline.push.schema import (
    BM25_INDEX,
    IndexType,
    Metric,
    ScalarField,
    build_schema,
    check_corpus_name,
    index_params,
    infer_lexical_fields,
    infer_scalar_fields,
)

log = logging.getLogger(__name__)

# Our own bookkeeping beside CollectionMeta (whose "mmsearch." keys the search side validates strictly).
FINGERPRINT_KEY = "mmsearch_push.fingerprint"
URI_HINT = "--milvus-uri or MMSEARCH_MILVUS__URI"


@dataclass(frozen=True)
class MilvusPushOptions:
    vectors: Path
    corpus: str  # alias
    filter_fields: list[str] | None = None  # None: "category" when the rows have it
    input_path: Path | None = None  # the corpus jsonl; default: the one recorded in the vectors manifest
    index_type: IndexType = IndexType.HNSW
    metric: Metric = Metric.IP
    batch_size: int = 1000
    allow_model_change: bool = False
    force: bool = False  # rebuild even when the alias already serves identical data
    progress: bool | None = None
    lexical_fields: list[str] = field(default_factory=list)  # text fields searchable with BM25 (full-text search)
    analyzer: Analyzer = Analyzer.STANDARD
    # A document corpus's chunk rows (offline/preprocess/chunks.py): recorded in the collection's metadata.
    encode_template: str = ""
    chunk_tokens: int = 0
    chunk_overlap: int = 0

    def chunking(self) -> tuple[str, int, int]:
        return (self.encode_template, self.chunk_tokens, self.chunk_overlap)


@dataclass(frozen=True)
class FillSpec:
    """What a fill (the step that writes every vector into the new collection) needs: picklable, so a
    distributed job can hand it to its workers."""

    settings: MilvusSettings
    collection: str
    vectors: Path
    manifest: IndexManifest
    corpus_path: Path
    scalars: list[ScalarField]
    lexical: list[LexicalField]
    batch_size: int


# Writes every vector of the spec into its collection; push_milvus flushes, indexes, loads and verifies after.
# It gets the corpus rows push_milvus has already parsed (by id): a fill in this process need not parse them again.
Fill = Callable[[FillSpec, Mapping[int, CorpusRow]], None]


@dataclass(frozen=True)
class MilvusPushSummary:
    alias: str
    collection: str
    count: int
    changed: bool
    dropped: list[str]
    seconds: float
    upsert_seconds: float

    def text(self) -> str:
        if not self.changed:
            return f"{self.alias} -> {self.collection} already serves these {self.count} vectors; nothing changed"
        rate = self.count / self.upsert_seconds if self.upsert_seconds > 0 else 0.0
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"{self.alias} -> {self.collection}: {self.count} vectors upserted ({rate:.0f}/s), flushed, indexed, "
            f"loaded and counted in {self.seconds:.1f}s{dropped}"
        )


class _LiteUnimplementedFilter(logging.Filter):
    """Milvus Lite's embedded gRPC server logs a traceback for RPCs it does not implement (pymilvus' create_index
    asks it for a timestamp); the call itself succeeds, so the traceback is noise for the person running a push."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))


@contextmanager
def milvus_client(settings: MilvusSettings) -> Iterator[Any]:
    from pymilvus.exceptions import MilvusException

    if "://" not in settings.uri:  # a local file: Milvus Lite embedded
        grpc_log = logging.getLogger("grpc._server")
        if not any(isinstance(f, _LiteUnimplementedFilter) for f in grpc_log.filters):
            grpc_log.addFilter(_LiteUnimplementedFilter())

    try:
        client = stores.milvus_client(settings)
    except MilvusException as exc:
        raise StoreUnavailableError(
            f"cannot reach Milvus at {settings.uri!r} (set {URI_HINT}): {getattr(exc, 'message', exc)}"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def alias_target(client: Any, alias: str) -> str | None:
    """The physical collection the alias points at, None if there is no such alias."""
    aliases = client.list_aliases().get("aliases", [])
    if alias not in aliases:
        if alias in client.list_collections():
            raise PushError(
                f"{alias!r} is a collection, not an alias: mmsearch serves corpora through an alias; "
                f"rename or drop that collection, or push under another --corpus"
            )
        return None
    return str(client.describe_alias(alias)["collection_name"])


def collection_meta(client: Any, name: str) -> tuple[CollectionMeta | None, str | None]:
    props = client.describe_collection(name).get("properties") or {}
    return from_properties(props), props.get(FINGERPRINT_KEY)


def count_rows(client: Any, name: str) -> int:
    res = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


def _fingerprint(
    manifest: IndexManifest,
    scalars: list[ScalarField],
    lexical: list[LexicalField],
    opts: MilvusPushOptions,
    corpus_sha: str,
) -> str:
    spec: dict[str, Any] = {
        "vectors": [manifest.model_key, manifest.model_sha256, manifest.field, manifest.input_sha256, manifest.total],
        "corpus_sha256": corpus_sha,
        "scalars": [[f.name, str(f.kind), f.max_length, f.max_capacity] for f in scalars],
        "index": index_params(opts.index_type, opts.metric, manifest.total),
    }
    if lexical:  # absent otherwise, so collections built before lexical fields existed keep their fingerprint
        spec["lexical"] = [[f.name, f.max_length] for f in lexical] + [str(opts.analyzer)]
    if opts.encode_template:  # likewise
        spec["chunking"] = list(opts.chunking())
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _load_rows(path: Path) -> tuple[dict[int, CorpusRow], str]:
    try:
        rows = {row.id: row for _, row in read_corpus(path)}
    except CorpusError as exc:
        raise PushError(str(exc)) from exc
    return rows, file_sha256(path)


def _new_name(client: Any, alias: str) -> str:
    existing = set(client.list_collections())
    name = physical_name(alias)
    while name in existing:  # two pushes within one second: wait for the next timestamp
        time.sleep(0.5)
        name = physical_name(alias, datetime.now(UTC))
    return name


def _check_model(
    alias: str,
    current: str,
    meta: CollectionMeta | None,
    manifest: IndexManifest,
    *,
    lexical: list[str],
    chunking: tuple[str, int, int],
    allow: bool,
) -> None:
    if meta is None or allow:
        return
    served = (meta.encode_template, meta.chunk_tokens, meta.chunk_overlap)
    if served != chunking:
        # Live writes are chunked as the collection records, and a corpus that turns from rows into documents
        # (or back) needs another search configuration: an explicit choice, like a model change.
        raise ModelMismatchError(
            f"corpus {alias!r} is served by {current} split as {meta.chunking()}; this push splits it as "
            f"{describe_chunking(*chunking)}: pass --allow-model-change to replace it (and check the search "
            "configuration)"
        )
    dropped = [f for f in meta.lexical_fields if f not in lexical]
    if dropped:
        # A live hybrid experiment searches these words: without them its BM25Matcher fails on every request.
        raise ModelMismatchError(
            f"corpus {alias!r} is served by {current} with lexical field(s) {', '.join(dropped)} (BM25Matcher "
            f"experiments may search them); this push would drop them: add --lexical-field "
            f"{' --lexical-field '.join(dropped)}, or pass --allow-model-change (and change the search configuration)"
        )
    if (meta.model_key, meta.dim, meta.vector_field) != (manifest.model_key, manifest.dim, manifest.vector_field):
        raise ModelMismatchError(
            f"corpus {alias!r} is served by {current} with model {meta.model_key!r} "
            f"({meta.dim}-d {meta.vector_field}); "
            f"these vectors come from {manifest.model_key!r} ({manifest.dim}-d {manifest.vector_field}). "
            "Queries would be encoded with the wrong model: pass --allow-model-change to replace it "
            "(and point the search configuration at the new model)"
        )


def push_milvus(
    settings: MilvusSettings,
    opts: MilvusPushOptions,
    fill: Fill | None = None,
    planned: IndexManifest | None = None,
    before_switch: Callable[[Any, FillSpec], None] | None = None,
) -> MilvusPushSummary:
    """`fill` writes the vectors into the new collection (default: from this process, shard by shard).

    `before_switch(client, spec)` runs once the new collection is verified, right before the alias moves; raising
    there leaves the alias where it was (a rebuild of a live corpus replays the live writes of its build time into
    `spec.collection`).

    `planned`: the manifest of vectors still being encoded (an ingest that fills while it encodes); its fill
    must return only once every shard is written, and the folder's manifest is complete before verifying."""
    started = time.perf_counter()
    alias = check_corpus_name(opts.corpus)
    manifest = planned or open_vectors(opts.vectors)
    corpus_path = opts.input_path or Path(manifest.input_path)
    rows, corpus_sha = _load_rows(corpus_path)
    if corpus_sha != manifest.input_sha256:
        raise PushError(
            f"{corpus_path} changed since the vectors in {opts.vectors} were made from it: run `mmsearch index` again"
        )
    names = opts.filter_fields
    if names is None:
        names = ["category"] if any("category" in r.fields() for r in rows.values()) else []
    scalars = infer_scalar_fields(names, rows.values())
    lexical = infer_lexical_fields(opts.lexical_fields, rows.values(), taken={"id", *(f.name for f in scalars)})
    fingerprint = _fingerprint(manifest, scalars, lexical, opts, corpus_sha)

    with milvus_client(settings) as client:
        if lexical:
            check_store(str(client.get_server_version()), opts.analyzer)
        current = alias_target(client, alias)
        if current is not None:
            meta, old_fp = collection_meta(client, current)
            _check_model(
                alias,
                current,
                meta,
                manifest,
                lexical=[f.name for f in lexical],
                chunking=opts.chunking(),
                allow=opts.allow_model_change,
            )
            if old_fp == fingerprint and not opts.force and count_rows(client, current) == manifest.total:
                return MilvusPushSummary(alias, current, manifest.total, False, [], time.perf_counter() - started, 0.0)
        new = _new_name(client, alias)
        meta = CollectionMeta(
            model_key=manifest.model_key,
            dim=manifest.dim,
            vector_field=manifest.vector_field,
            metric=str(opts.metric),
            index_type=str(opts.index_type),
            corpus=alias,
            count=manifest.total,
            lexical_fields=tuple(f.name for f in lexical),
            analyzer=str(opts.analyzer) if lexical else "",
            encode_template=opts.encode_template,
            chunk_tokens=opts.chunk_tokens,
            chunk_overlap=opts.chunk_overlap,
        )
        props = {**to_properties(meta), FINGERPRINT_KEY: fingerprint}
        spec = FillSpec(settings, new, opts.vectors, manifest, corpus_path, scalars, lexical, opts.batch_size)
        upsert_seconds = _build(
            client,
            spec,
            fill or functools.partial(_upsert_all, client, progress=opts.progress),
            opts=opts,
            rows=rows,
            properties=props,
        )
        if before_switch is not None:
            try:
                before_switch(client, spec)
            except BaseException:
                client.drop_collection(new)
                raise
        # The switch: from here on searches read the new collection.
        if current is None:
            client.create_alias(new, alias)
        else:
            client.alter_alias(new, alias)
        log.info("alias %s now points at %s (was %s)", alias, new, current)
        dropped = _drop_old(client, alias, keep=new)
    return MilvusPushSummary(alias, new, manifest.total, True, dropped, time.perf_counter() - started, upsert_seconds)


def _build(
    client: Any,
    spec: FillSpec,
    fill: Fill,
    *,
    opts: MilvusPushOptions,
    rows: dict[int, CorpusRow],
    properties: dict[str, str],
) -> float:
    """Create, fill and verify the spec's collection; on any failure drop it, so nothing half-built is left."""
    from pymilvus.exceptions import MilvusException

    name, manifest, scalars, lexical = spec.collection, spec.manifest, spec.scalars, spec.lexical
    schema = build_schema(manifest.vector_field, manifest.dim, scalars, lexical, opts.analyzer)
    client.create_collection(name, schema=schema, properties=properties)
    try:
        t0 = time.perf_counter()
        fill(spec, rows)
        upsert_seconds = time.perf_counter() - t0
        client.flush(name)  # index building and counting see only flushed segments
        indexes = {manifest.vector_field: index_params(opts.index_type, opts.metric, manifest.total)}
        indexes |= {sparse_field(lf.name): BM25_INDEX for lf in lexical}
        for field_name, index_spec in indexes.items():
            create_index(client, name, field_name, index_spec)
        client.load_collection(name)
        _verify(client, name, open_vectors(spec.vectors), spec.vectors, lexical=lexical, rows=rows)
    except BaseException as exc:
        log.error("building %s failed (%s); dropping it, the alias is unchanged", name, exc)
        try:
            client.drop_collection(name)
        except MilvusException as drop_exc:  # keep the original error; say what is left over
            log.error("could not drop the half-built %s: %s (drop it by hand)", name, drop_exc)
        if isinstance(exc, MilvusException):
            raise PushError(f"Milvus refused the load into {name}: {getattr(exc, 'message', exc)}") from exc
        raise
    return upsert_seconds


def create_index(client: Any, collection: str, field_name: str, spec: dict[str, Any]) -> None:
    """Build one index (named as its field), idempotently.

    An HNSW build of a million vectors keeps Milvus Lite's server on one create_index call for minutes; its gRPC
    server then answers the client's keep-alive pings with GOAWAY ("too_many_pings"), pymilvus retries the call,
    and the retry finds the index the first call made: "index already exists" (measured by bench_scale at 1M rows;
    Milvus Lite answers so even an identical request). An index the field already has is taken when its type and
    metric are the ones asked for; any other is an error naming both."""
    from pymilvus.exceptions import MilvusException

    params = client.prepare_index_params()
    params.add_index(field_name, index_name=field_name, **spec)
    try:
        client.create_index(collection, params)
    except MilvusException as exc:
        found = _existing_index(client, collection, field_name)
        if found is None:  # not a retry's answer: Milvus refused the index itself
            raise
        wanted = (str(spec["index_type"]), str(spec["metric_type"]))
        if (str(found.get("index_type")), str(found.get("metric_type"))) != wanted:
            raise PushError(
                f"{collection}.{field_name} already has an index {found.get('index_type')}/"
                f"{found.get('metric_type')}, not the {wanted[0]}/{wanted[1]} asked for"
            ) from exc
        log.warning("%s.%s: a retried create_index found the index the first call built", collection, field_name)


def _existing_index(client: Any, collection: str, field_name: str) -> dict[str, Any] | None:
    from pymilvus.exceptions import MilvusException

    try:
        found = client.describe_index(collection, index_name=field_name)
    except MilvusException:
        return None
    return dict(found) if found else None


def _upsert_all(client: Any, spec: FillSpec, rows: Mapping[int, CorpusRow], *, progress: bool | None) -> None:
    bar = tqdm(total=spec.manifest.total, desc=f"upsert {spec.collection}", unit="vec", disable=progress is False)
    try:
        for ids, vectors in iter_shards(spec.vectors, spec.manifest):
            for batch in entity_batches(spec, ids, vectors, rows):
                client.upsert(spec.collection, batch)
                bar.update(len(batch))
    finally:
        bar.close()


def entity_batches(
    spec: FillSpec, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], rows: Mapping[int, CorpusRow]
) -> Iterator[list[dict[str, Any]]]:
    """Milvus entities of one shard, `spec.batch_size` at a time (the last, partial batch included)."""
    for s in range(0, len(ids), spec.batch_size):
        batch = []
        for rid, vec in zip(ids[s : s + spec.batch_size].tolist(), vectors[s : s + spec.batch_size], strict=True):
            row = rows.get(rid)
            if row is None:
                raise PushError(f"vector id {rid} has no row in the corpus {spec.corpus_path}")
            entity: dict[str, Any] = {"id": rid, spec.manifest.vector_field: vec}
            values = row.fields()
            for f in spec.scalars:
                v = values.get(f.name)
                entity[f.name] = f.default() if v is None else v
            for lf in spec.lexical:  # Milvus fills <field>_bm25 from the text itself
                entity[lf.name] = values.get(lf.name) or ""
            batch.append(entity)
        yield batch


def _verify(
    client: Any,
    name: str,
    manifest: IndexManifest,
    folder: Path,
    *,
    lexical: list[LexicalField],
    rows: dict[int, CorpusRow],
) -> None:
    got = count_rows(client, name)
    if got != manifest.total:
        raise PushError(f"{name} holds {got} rows after loading, expected {manifest.total}")
    # A unit vector scores ~1 against itself under IP and COSINE: catches a wrong field, metric or unloaded index.
    ids, vectors = next(iter_shards(folder, manifest))
    hits = client.search(
        name, data=[vectors[0].tolist()], anns_field=manifest.vector_field, limit=1, output_fields=[PRIMARY_KEY]
    )[0]
    if not hits or float(hits[0]["distance"]) < 0.99:
        raise PushError(f"{name}: searching for the vector of id {int(ids[0])} did not find it (got {list(hits)})")
    # A row's own text finds it by BM25: catches an analyzer that produced no terms or an unbuilt sparse index.
    # The longest of the first rows is the most distinctive one (a short text can be all stop words).
    sample = list(rows.items())[:1000]
    for lf in lexical:
        row_id, text = max(((rid, str(r.fields().get(lf.name) or "")) for rid, r in sample), key=lambda t: len(t[1]))
        found = client.search(
            name,
            data=[text[:2000]],
            anns_field=sparse_field(lf.name),
            limit=100,
            search_params={"metric_type": "BM25"},
            output_fields=[PRIMARY_KEY],
        )[0]
        if row_id not in {int(h["id"]) for h in found}:
            raise PushError(f"{name}: a BM25 search of {lf.name!r} for the text of row {row_id} did not find it")


def _drop_old(client: Any, alias: str, keep: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(alias)}__\d{{14}}$")
    dropped = []
    for other in client.list_collections():
        if other != keep and pattern.match(other):
            client.drop_collection(other)
            dropped.append(other)
    if dropped:
        log.info("dropped the previous physical collection(s) of %s: %s", alias, ", ".join(dropped))
    return dropped
