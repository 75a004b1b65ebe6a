"""Document rows to the chunk rows Milvus holds: each document's encode text (its template) split on the model's own
tokens (mmsearch/chunking.py), one row per chunk `{"id": chunk key, "doc_id", "chunk", "passage", <filter fields>}`.

Without chunking a document is one chunk holding its whole text (the model still reads only its window of it;
BM25 reads all of it). The split is the same code the search service runs on a document written live.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tqdm import tqdm

from mmsearch.chunking import (
    DOCUMENT_FIELD,
    PASSAGE_FIELD,
    POSITION_FIELD,
    POSITIONS,
    ChunkingError,
    ChunkOptions,
    chunk_key,
    chunk_text,
    render,
    window,
)
from mmsearch.files import atomic_text_writer
from mmsearch.model_repo import ModelManifest, ModelRepository
from offline.errors import OfflineError
from offline.preprocess.records import CorpusError, read_corpus
from offline.preprocess.rejects import Reject, write_rejects

VARCHAR_BYTES = 65_535  # a Milvus VARCHAR: the most a passage may hold


class ChunkOptionsError(OfflineError):
    """Chunk options that this model cannot take (a size over its window, overlap >= size)."""


@dataclass(frozen=True)
class Chunker:
    """How a document corpus becomes chunk rows: the template, the split (None: whole documents) and the model's
    tokenizer the split counts on."""

    template: str
    options: ChunkOptions | None
    tokenizer: Tokenizer
    model_window: int

    @classmethod
    def for_model(
        cls,
        repo: ModelRepository,
        model_key: str,
        template: str,
        *,
        tokens: int | None,
        overlap: int | None,
    ) -> Chunker:
        """`tokens` None: the model's window; 0: no chunking. `overlap` None: an eighth of the chunk size."""
        manifest = repo.manifest(model_key)
        tokenizer = _tokenizer(repo, manifest)
        room = model_window(manifest, tokenizer)
        if tokens == 0:
            return cls(template, None, tokenizer, room)
        size = room if tokens is None else tokens
        options = ChunkOptions(tokens=size, overlap=size // 8 if overlap is None else overlap, max_chunks=POSITIONS)
        try:
            options.check(room)
        except ChunkingError as exc:
            raise ChunkOptionsError(f"--chunk-tokens/--chunk-overlap: {exc}") from exc
        return cls(template, options, tokenizer, room)

    def chunks(self, document_id: int, fields: dict[str, Any], *, where: str) -> list[tuple[int, str, int]]:
        """(position, passage, tokens) of a document; ChunkingError names the document when it cannot be split."""
        text = render(self.template, fields, where=where)
        if not text:
            raise ChunkingError(f"{where}: the encode template {self.template!r} makes no text of id {document_id}")
        if self.options is None:
            if len(text.encode()) > VARCHAR_BYTES:
                raise ChunkingError(f"{where}: {len(text.encode())} bytes is more than one Milvus row holds; chunk it")
            tokens = len(self.tokenizer.encode(text, add_special_tokens=False).ids)
            return [(0, text, tokens)]
        found = chunk_text(text, self.tokenizer, self.options, where=f"{where} (id {document_id})")
        return [(c.position, c.text(text), c.tokens) for c in found]


def _tokenizer(repo: ModelRepository, manifest: ModelManifest) -> Tokenizer:
    if not manifest.tokenizer_file:
        raise ChunkOptionsError(f"model {manifest.key!r} ({manifest.kind}) has no tokenizer: it does not encode text")
    tok = Tokenizer.from_file(str(repo.path(manifest.key) / manifest.tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    return tok


def model_window(manifest: ModelManifest, tokenizer: Tokenizer) -> int:
    """Word pieces of a document the model reads: its maximum length less its special tokens and document prompt."""
    if not manifest.max_seq_len:
        raise ChunkOptionsError(f"model {manifest.key!r} records no max_seq_len: its window is unknown")
    special = len(tokenizer.encode("", add_special_tokens=True).ids)
    prompt = manifest.document_prompt or ""
    return window(manifest.max_seq_len, special, len(tokenizer.encode(prompt, add_special_tokens=False).ids))


@dataclass
class ChunkReport:
    output: Path
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    rejects: list[Reject] | None = None

    def text(self, chunker: Chunker) -> str:
        how = (
            f"chunks of at most {chunker.options.tokens} tokens, overlap {chunker.options.overlap}"
            if chunker.options
            else f"whole documents (the model reads their first {chunker.model_window} tokens)"
        )
        rejected = f"; rejected {len(self.rejects)}" if self.rejects else ""
        return (
            f"{self.documents} documents -> {self.chunks} passages ({how}), {self.tokens} tokens, "
            f"in {self.seconds:.1f}s -> {self.output}{rejected}"
        )


def chunk_rows(
    document_id: int, fields: dict[str, Any], parts: list[tuple[int, str, int]], filter_fields: list[str]
) -> list[dict[str, Any]]:
    """The Milvus rows of a document's passages (`Chunker.chunks`): its id, the position, the passage and the
    document's filter fields. The same for a file's documents and for live ones (a rebuild's replay)."""
    extra = {f: fields[f] for f in filter_fields if f in fields}
    return [
        {"id": chunk_key(document_id, position), DOCUMENT_FIELD: document_id, POSITION_FIELD: position,
         PASSAGE_FIELD: passage, **extra}
        for position, passage, _ in parts
    ]  # fmt: skip


def _id(line: str) -> int | None:
    return int(json.loads(line)["id"]) if line.strip() else None


def write_chunks(documents: Path, output: Path, chunker: Chunker, filter_fields: list[str]) -> ChunkReport:
    """Chunk every document row of `documents` into `output`. A document that cannot be split (more chunks than a
    document may have) is rejected to `<output>.rejects.jsonl` with the reason, and left out of MongoDB too."""
    report = ChunkReport(output, rejects=[])
    rejected: set[int] = set()
    started = time.perf_counter()
    try:
        with atomic_text_writer(output) as out:
            for line, row in tqdm(read_corpus(documents), desc="chunk", unit="docs", disable=None):
                fields = row.fields()
                where = f"{documents.name} line {line}"
                try:
                    parts = chunker.chunks(row.id, fields, where=where)
                except ChunkingError as exc:
                    assert report.rejects is not None
                    report.rejects.append(Reject(where, "cannot chunk", str(exc)))
                    rejected.add(row.id)
                    continue
                for chunk in chunk_rows(row.id, fields, parts, filter_fields):
                    out.write(json.dumps(chunk, ensure_ascii=False) + "\n")
                report.chunks += len(parts)
                report.tokens += sum(tokens for _, _, tokens in parts)
                report.documents += 1
    except CorpusError as exc:
        raise ChunkOptionsError(str(exc)) from exc
    write_rejects(output.with_name(output.stem + ".rejects.jsonl"), report.rejects or [])
    if rejected:  # a document without passages would sit in MongoDB, never found: leave it out there too
        kept = [line for line in documents.read_text(encoding="utf-8").splitlines() if _id(line) not in rejected]
        with atomic_text_writer(documents) as out:
            out.writelines(line + "\n" for line in kept)
    report.seconds = time.perf_counter() - started
    return report
