"""Documents' vectors, computed as the ingest computes them: the corpus's model with its DOCUMENT prompt.

The tokenizer service and the model server's Embed tokenize query texts (the query prompt). A document needs the
document prompt, so it is tokenized here with the model's own tokenizer (mmsearch.runtime.text, the code the
ingest uses) and only the model runs on the model server, through the same Embed call as a query's tensors.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmsearch.chunking import ChunkingError
from mmsearch.model_repo import ModelRepoError, ModelRepository
from mmsearch.runtime.text import TextPreprocessor
from offline.preprocess.chunks import Chunker, ChunkOptionsError
from services.search.documents.errors import InvalidDocumentError, WriteFailedError
from services.search.documents.schema import CorpusSchema, LiveDocument
from services.search.errors import DependencyUnavailableError
from services.search.ports import QueryModels


@dataclass(frozen=True)
class Encoded:
    vectors: list[list[float]]
    truncated: list[bool]  # the text was cut to the model's window (the response says so)


class DocumentEncoder:
    def __init__(self, repo: ModelRepository, models: QueryModels) -> None:
        self.repo = repo
        self.models = models
        self._preps: dict[str, TextPreprocessor] = {}
        self._chunkers: dict[tuple[str, str, int, int], Chunker] = {}
        self._lock = threading.Lock()

    def _chunker(self, schema: CorpusSchema) -> Chunker:
        meta = schema.meta
        key = (meta.model_key, meta.encode_template, meta.chunk_tokens, meta.chunk_overlap)
        with self._lock:
            chunker = self._chunkers.get(key)
            if chunker is None:
                chunker = self._chunkers[key] = Chunker.for_model(
                    self.repo,
                    meta.model_key,
                    meta.encode_template,
                    tokens=meta.chunk_tokens,
                    overlap=meta.chunk_overlap,
                )
            return chunker

    def passages(self, schema: CorpusSchema, document: LiveDocument) -> list[tuple[int, str]]:
        """A document corpus's document split as the ingest splits it (offline/preprocess/chunks.py): its
        (position, passage) pairs; InvalidDocumentError when it cannot be (more passages than a document may have)."""
        try:
            chunker = self._chunker(schema)
            parts = chunker.chunks(document.id, document.fields, where=f"document {document.id}")
        except ModelRepoError as exc:
            raise DependencyUnavailableError("model server", f"model {schema.meta.model_key!r}: {exc}") from exc
        except (ChunkingError, ChunkOptionsError) as exc:
            raise InvalidDocumentError(str(exc)) from exc
        if not parts:
            raise InvalidDocumentError(f"document {document.id} has no words to encode")
        passages = [(position, text) for position, text, _ in parts]
        schema.check_passages(passages)
        return passages

    async def encode_passages(self, model_key: str, split: Sequence[Sequence[tuple[int, str]]]) -> Encoded:
        """A document corpus's documents, given as their passages (`passages`): every passage encoded (one model
        call for all), a document's vector the concatenation of its passages' in their order."""
        encoded = await self.encode(model_key, [text for parts in split for _, text in parts])
        vectors: list[list[float]] = []
        cut: list[bool] = []  # passages fit the window by construction; a whole document (chunk_tokens 0) may not
        at = 0
        for parts in split:
            vectors.append([x for v in encoded.vectors[at : at + len(parts)] for x in v])
            cut.append(any(encoded.truncated[at : at + len(parts)]))
            at += len(parts)
        return Encoded(vectors, cut)

    def _prep(self, model_key: str) -> TextPreprocessor:
        with self._lock:
            prep = self._preps.get(model_key)
            if prep is None:
                prep = self._preps[model_key] = TextPreprocessor.from_repo(self.repo, model_key)
            return prep

    async def encode_images(self, model_key: str, images: Sequence[bytes]) -> Encoded:
        """Photos: decoded and preprocessed by the tokenizer service (the ingest's own image preprocessing; a file
        that does not decode is 422 there), then embedded as the ingest does."""
        try:
            output = (await asyncio.to_thread(self.repo.manifest, model_key)).embedding_output
        except ModelRepoError as exc:
            raise DependencyUnavailableError("model server", f"model {model_key!r}: {exc}") from exc
        pixels = await self.models.preprocess_images(model_key, list(images))
        embedding = await self.models.embed(model_key, pixels, output)
        return Encoded([v.tolist() for v in embedding.vectors], [False] * len(images))

    async def encode_documents(
        self,
        schema: CorpusSchema,
        documents: Sequence[LiveDocument],
        *,
        images: Sequence[bytes] | None = None,
        passages: Sequence[Sequence[tuple[int, str]]] | None = None,
    ) -> Encoded:
        """The vectors of `documents` for `schema`'s corpus: its text field, its photos (`images`, the uploaded
        bytes in the documents' order; without them, the files the documents' `image` paths name), or a document
        corpus's passages (`passages`, the documents' split when the caller has it already)."""
        if schema.kind == "documents":
            if passages is None:
                passages = [await asyncio.to_thread(self.passages, schema, d) for d in documents]
            return await self.encode_passages(schema.meta.model_key, passages)
        if schema.kind != "images":
            return await self.encode(schema.meta.model_key, [d.text(schema) for d in documents])
        if images is None:

            def read() -> list[bytes]:
                return [Path(str(d.fields["image"])).read_bytes() for d in documents]

            try:
                images = await asyncio.to_thread(read)
            except (OSError, KeyError) as exc:
                raise WriteFailedError(f"a photo to encode again is not readable: {exc}") from exc
        return await self.encode_images(schema.meta.model_key, images)

    async def encode(self, model_key: str, texts: Sequence[str]) -> Encoded:
        def tokenize() -> tuple[dict[str, object], list[bool]]:
            batch = self._prep(model_key).prep(list(texts), role="document")
            return dict(batch.tensors), list(batch.truncated)

        try:
            tensors, truncated = await asyncio.to_thread(tokenize)
        except ModelRepoError as exc:
            # The model repository of this service lacks the corpus's model: no write can be encoded.
            raise DependencyUnavailableError("model server", f"model {model_key!r}: {exc}") from exc
        # The output the ingest stores (the manifest's embedding output), not one a search config may name.
        output = self._prep(model_key).manifest.embedding_output
        embedding = await self.models.embed(model_key, tensors, output)  # type: ignore[arg-type]
        return Encoded([v.tolist() for v in embedding.vectors], truncated)
