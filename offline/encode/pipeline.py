"""The encode loop: a reader thread prepares model inputs while the main thread runs ONNX Runtime.

Reading files, decoding images and tokenizing (the `mmsearch.runtime` preprocessors) happen on a producer
thread that stays at most `queue_batches` batches ahead; the ONNX session (which releases the GIL) runs on the
caller's thread and writes each shard as soon as its last batch is encoded. Both preprocessing and inference
are the shared runtime's, the same code the online services run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from mmsearch.model_repo import ModelKind, ModelManifest, ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder, l2_normalize
from mmsearch.runtime.image import ImageDecodeError, ImagePreprocessor
from mmsearch.runtime.text import TextPreprocessor
from offline.encode.manifest import (
    MANIFEST_NAME,
    IndexManifest,
    file_sha256,
    read_manifest,
    vector_field_name,
    write_manifest,
)
from offline.encode.shards import read_done_markers, shard_ok, write_shard
from offline.errors import OfflineError
from offline.preprocess.records import CorpusError, CorpusRow, read_corpus

log = logging.getLogger(__name__)


class EncodeError(OfflineError):
    """The corpus cannot be encoded as asked; the message says which row or option to fix."""


@dataclass(frozen=True)
class EncodeSummary:
    folder: Path
    model_key: str
    dim: int
    total: int
    encoded: int  # rows encoded by this run (total minus what a previous run had finished)
    shards_done_before: int
    shards: int
    seconds: float

    @property
    def docs_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        if self.encoded == 0:
            return f"{self.folder}: already complete ({self.total} vectors, {self.shards} shards); nothing to do"
        resumed = f", resumed with {self.shards_done_before} shards done" if self.shards_done_before else ""
        return (
            f"encoded {self.encoded} of {self.total} rows with {self.model_key} ({self.dim}-d) in {self.seconds:.1f}s "
            f"= {self.docs_per_second:.1f} docs/s; {self.shards} shards in {self.folder}{resumed}"
        )


@dataclass
class _Batch:
    shard: int
    positions: list[int]  # positions within the shard, in the order of the prepared inputs
    tensors: dict[str, npt.NDArray[Any]]
    last: bool  # last batch of its shard


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _load_rows(corpus: Path, field: str, is_image: bool) -> tuple[list[int], list[str]]:
    ids: list[int] = []
    values: list[str] = []
    try:
        for line, row in read_corpus(corpus):
            ids.append(row.id)
            values.append(field_value(row, field, is_image, where=f"{corpus} line {line}"))
    except CorpusError as exc:
        raise EncodeError(str(exc)) from exc
    if not ids:
        raise EncodeError(f"{corpus} has no rows to encode")
    return ids, values


def field_value(row: CorpusRow, field: str, is_image: bool, *, where: str) -> str:
    """The text or image path of `field` in a row, or an error naming the row."""
    try:
        value = row.field(field)
    except KeyError:
        raise EncodeError(f"{where}: row {row.id} has no {field!r} field") from None
    if not isinstance(value, str) or not value.strip():
        what = "an image path" if is_image else "text"
        raise EncodeError(f"{where}: {field!r} of row {row.id} is not {what}: {value!r}")
    return value


def plan_job(folder: Path, fresh: IndexManifest, restart: bool, replace_other_job: bool) -> IndexManifest:
    """The manifest to continue with: the existing one when it is the same job, else a fresh one.

    Shards recorded in vectors.json or left with a done marker by a distributed worker count as finished when
    their files are whole, in any order; everything else is encoded (again)."""
    old = read_manifest(folder) if not restart else None
    if old is not None:
        same = {
            "model key": (old.model_key, fresh.model_key),
            "model file (sha256)": (old.model_sha256, fresh.model_sha256),
            "field": (old.field, fresh.field),
            "input (sha256)": (old.input_sha256, fresh.input_sha256),
            "shard size": (old.shard_size, fresh.shard_size),
        }
        diff = [f"{k}: {a} -> {b}" for k, (a, b) in same.items() if a != b]
        if diff and replace_other_job:
            log.info("%s: the corpus or model changed (%s); encoding from scratch", folder, "; ".join(diff))
            return plan_job(folder, fresh, True, False)
        if diff:
            raise EncodeError(
                f"{folder} holds vectors of a different job ({'; '.join(diff)}); "
                "pass --restart to discard them, or choose another --output"
            )
        candidates = {s.index: s for s in old.shards}
        for index, shard in read_done_markers(folder, old.job_key).items():
            candidates.setdefault(index, shard)
        old.shards = []
        for index in sorted(candidates):
            if index < old.shard_count and shard_ok(folder, candidates[index], old.dim):
                old.add_shard(candidates[index])
            else:
                log.warning("%s: shard %d is missing or damaged; encoding it again", folder, index)
        old.complete = len(old.shards) == old.shard_count
        return old
    if restart and folder.exists():
        for p in folder.glob("shard-*"):  # vectors, ids and done markers
            p.unlink()
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
    return fresh


def check_model(repo: ModelRepository, model_key: str, field: str) -> tuple[ModelManifest, bool]:
    """The model's manifest and whether it encodes images; refuses a text model for the image field."""
    manifest = repo.manifest(model_key)  # ModelNotFoundError names the available keys
    is_image = manifest.kind == ModelKind.CLIP_IMAGE
    if field == "image" and not is_image:
        raise EncodeError(
            f"model {model_key!r} ({manifest.kind}) encodes text, but field 'image' holds image paths: "
            "use an image model (kind clip_image)"
        )
    return manifest, is_image


def fresh_manifest(
    corpus: Path, repo: ModelRepository, model: ModelManifest, field: str, *, total: int, shard_size: int
) -> IndexManifest:
    return IndexManifest(
        model_key=model.key,
        model_kind=str(model.kind),
        model_sha256=file_sha256(repo.onnx_path(model.key)),
        dim=model.embedding_dim,
        field=field,
        vector_field=vector_field_name(field),
        input_path=str(corpus.resolve()),
        input_sha256=file_sha256(corpus),
        total=total,
        shard_size=shard_size,
    )


def encode_corpus(
    corpus: Path,
    repo: ModelRepository,
    model_key: str,
    field: str,
    folder: Path,
    *,
    batch_size: int = 32,
    shard_size: int = 10_000,
    restart: bool = False,
    replace_other_job: bool = False,
    providers: list[str] | None = None,
    queue_batches: int = 8,
    progress: bool | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> EncodeSummary:
    """Encode `field` of every corpus row into shards under `folder`; resumes a matching earlier run.

    Vectors of another job in `folder` (other model, input, field or shard size) are an error, unless
    `restart` (always start over) or `replace_other_job` (start over only then; `ingest` owns its folder).
    """
    if batch_size < 1 or shard_size < 1:
        raise EncodeError("--batch-size and --shard-size must be at least 1")
    model, is_image = check_model(repo, model_key, field)
    ids, values = _load_rows(corpus, field, is_image)
    folder.mkdir(parents=True, exist_ok=True)
    fresh = fresh_manifest(corpus, repo, model, field, total=len(ids), shard_size=shard_size)
    plan = plan_job(folder, fresh, restart, replace_other_job)
    done_before = len(plan.shards)
    if plan.complete:
        write_manifest(folder, plan)
        return EncodeSummary(folder, model_key, plan.dim, plan.total, 0, done_before, len(plan.shards), 0.0)
    if done_before:
        log.info("%s: resuming with %d of %d rows done", folder, plan.done_rows, plan.total)

    # The reader thread tokenizes/decodes while ONNX Runtime runs: idle ORT threads must yield the core to it
    # instead of spin-waiting (spinning cost ~1/3 of the throughput on 2 cores).
    encoder = OnnxEncoder.from_repo(
        repo, model_key, providers=providers, config_entries={"session.intra_op.allow_spinning": "0"}
    )
    prepare = image_prep(repo, model_key, values) if is_image else text_prep(repo, model_key, values)
    reader = _Reader(prepare, plan, batch_size=batch_size, is_image=is_image, values=values, depth=queue_batches)
    started = time.perf_counter()
    reader.start()
    bar = tqdm(total=plan.total, initial=plan.done_rows, desc=f"encode {field}", unit="docs", disable=progress is False)
    try:
        encoded = _consume(reader, encoder=encoder, plan=plan, folder=folder, ids=ids, bar=bar, on_shard=on_shard)
    finally:
        reader.stop.set()
        bar.close()
        reader.join(timeout=5)
    seconds = time.perf_counter() - started
    return EncodeSummary(folder, model_key, plan.dim, plan.total, encoded, done_before, len(plan.shards), seconds)


def _consume(
    reader: _Reader,
    *,
    encoder: OnnxEncoder,
    plan: IndexManifest,
    folder: Path,
    ids: list[int],
    bar: tqdm[Any],
    on_shard: Callable[[int], None] | None,
) -> int:
    """Run the model on the reader's batches; write each shard (then the manifest) when its last batch is in."""
    encoded = 0
    shard_vectors: npt.NDArray[np.float32] | None = None
    while True:
        item = reader.queue.get()
        if item is _DONE:
            return encoded
        if isinstance(item, _Failure):
            raise item.exc
        assert isinstance(item, _Batch)
        first = item.shard * plan.shard_size
        n = min(plan.shard_size, plan.total - first)
        if shard_vectors is None:
            shard_vectors = np.empty((n, plan.dim), dtype=np.float32)
        shard_vectors[item.positions] = l2_normalize(encoder.run(item.tensors))
        bar.update(len(item.positions))
        encoded += len(item.positions)
        if item.last:
            shard_ids = np.asarray(ids[first : first + n], dtype=np.int64)
            plan.add_shard(write_shard(folder, item.shard, first, shard_ids, shard_vectors))
            write_manifest(folder, plan)
            shard_vectors = None
            if on_shard is not None:
                on_shard(item.shard)


Prepare = Callable[[list[int]], dict[str, npt.NDArray[Any]]]


def text_prep(repo: ModelRepository, key: str, values: list[str]) -> Prepare:
    prep = TextPreprocessor.from_repo(repo, key)

    def run(rows: list[int]) -> dict[str, npt.NDArray[Any]]:
        # Corpus rows are documents: the model's document prompt, if it has one, goes in front.
        return dict(prep.prep([values[i] for i in rows], role="document").tensors)

    return run


def image_prep(repo: ModelRepository, key: str, values: list[str]) -> Prepare:
    prep = ImagePreprocessor.from_repo(repo, key)

    def run(rows: list[int]) -> dict[str, npt.NDArray[Any]]:
        blobs = []
        for i in rows:
            try:
                blobs.append(Path(values[i]).read_bytes())
            except OSError as exc:
                raise EncodeError(f"cannot read image {values[i]!r}: {exc}") from exc
        try:
            return {prep.input_name: prep.prep(blobs)}
        except ImageDecodeError as exc:
            raise EncodeError(f"image {values[rows[exc.index]]!r}: {exc.reason}") from exc

    return run


def encode_shard_rows(
    encoder: OnnxEncoder, prepare: Prepare, values: list[str], *, batch_size: int, is_image: bool
) -> npt.NDArray[np.float32]:
    """One shard's vectors without the reader thread (a distributed worker's loop): the same batches, in the
    same order, through the same preprocessing and session calls as the sequential engine."""
    vectors = np.empty((len(values), encoder.dim), dtype=np.float32)
    for positions in _batches_of_shard(0, len(values), batch_size, is_image, values):
        vectors[positions] = l2_normalize(encoder.run(prepare(positions)))
    return vectors


def encode_rows(
    rows: Sequence[CorpusRow],
    repo: ModelRepository,
    model_key: str,
    field: str,
    *,
    batch_size: int = 32,
    providers: list[str] | None = None,
) -> npt.NDArray[np.float32]:
    """The vectors of a few rows held in memory (a rebuild's replay of live writes), made exactly as a corpus
    file's rows are: the model's document prompt, the same preprocessing and normalisation."""
    _, is_image = check_model(repo, model_key, field)
    values = [field_value(row, field, is_image, where="live document") for row in rows]
    encoder = OnnxEncoder.from_repo(repo, model_key, providers=providers)
    prepare = image_prep(repo, model_key, values) if is_image else text_prep(repo, model_key, values)
    return encode_shard_rows(encoder, prepare, values, batch_size=batch_size, is_image=is_image)


def _batches_of_shard(first: int, n: int, batch_size: int, is_image: bool, values: list[str]) -> Iterator[list[int]]:
    positions = list(range(n))
    if not is_image:
        # Similar lengths in one batch waste less compute on padding; positions put results back in order.
        positions.sort(key=lambda p: len(values[first + p]))
    for s in range(0, n, batch_size):
        yield positions[s : s + batch_size]


class _Reader(threading.Thread):
    """Producer: prepares model inputs shard by shard, at most `queue_batches` batches ahead of the encoder."""

    def __init__(
        self, prepare: Prepare, plan: IndexManifest, *, batch_size: int, is_image: bool, values: list[str], depth: int
    ) -> None:
        super().__init__(name="encode-reader", daemon=True)
        self.prepare = prepare
        self.shards = plan.missing_shards()
        self.shard_size = plan.shard_size
        self.total = plan.total
        self.batch_size = batch_size
        self.is_image = is_image
        self.values = values
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()

    def _put(self, item: object) -> bool:
        return put_until_stopped(self.queue, item, self.stop)

    def run(self) -> None:
        try:
            for shard in self.shards:
                first = shard * self.shard_size
                n = min(self.shard_size, self.total - first)
                batches = list(_batches_of_shard(first, n, self.batch_size, self.is_image, self.values))
                for k, positions in enumerate(batches):
                    tensors = self.prepare([first + p for p in positions])
                    if not self._put(_Batch(shard, positions, tensors, last=k == len(batches) - 1)):
                        return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - any failure must reach the consumer, or it would wait forever
            self._put(_Failure(exc))


def put_until_stopped(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put `item` on a bounded queue, waiting while it is full, but give up (False) once `stop` is set: a consumer
    that stopped must not leave its producer blocked forever."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False
