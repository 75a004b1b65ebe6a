"""Splitting a long document into chunks that fit a model's window, on the model's own tokens.

Why the model's tokens and not words or characters: the window is counted in word pieces, and a chunk that is cut
again by the model's truncation loses its end silently. A chunk ends at a sentence boundary where one fits; a
sentence longer than the chunk is cut between tokens. Consecutive chunks share up to `overlap` tokens: the whole
sentences (or parts of a cut sentence) that end the previous chunk and fit in it, as Elasticsearch's
`semantic_text` repeats a sentence; none when the last one alone is longer. Each chunk keeps its character span in
the original text, so a passage shown to a user is the document's own words.

Shared by the offline ingest (every row of a chunked corpus) and the search service's live writes (a document
written live is chunked exactly as its ingested twin).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# A sentence ends at . ! ? (optionally followed by closing quotes or brackets) before white space.
_SENTENCE_END = re.compile(r"""(?<=[.!?])["')\]]*\s+""")


class ChunkingError(ValueError):
    """Chunk options that cannot work, or a document that yields more chunks than allowed."""


@dataclass(frozen=True)
class ChunkOptions:
    tokens: int  # the most word pieces in one chunk (the model's window less its special tokens and prompt)
    overlap: int = 0  # the most word pieces two consecutive chunks share
    max_chunks: int = 256  # per document: more is an error naming the document, not a silent cut

    def check(self, window: int) -> None:
        """`window`: the word pieces a chunk may hold in this model (its max length less special tokens and the
        document prompt)."""
        if self.tokens < 1:
            raise ChunkingError(f"chunk size must be at least 1 token, not {self.tokens}")
        if self.tokens > window:
            raise ChunkingError(
                f"chunks of {self.tokens} tokens do not fit the model's window of {window} tokens "
                "(its maximum length less its special tokens and document prompt)"
            )
        if not 0 <= self.overlap < self.tokens:
            raise ChunkingError(
                f"chunk overlap must be at least 0 and less than the size ({self.tokens}), not {self.overlap}"
            )


@dataclass(frozen=True)
class Chunk:
    position: int  # 0, 1, ... in the document
    start: int  # character span in the document's text
    end: int
    tokens: int  # word pieces in the chunk

    def text(self, document: str) -> str:
        return document[self.start : self.end]


def _sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences, white space between them left out."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def chunk_text(text: str, tokenizer: Tokenizer, options: ChunkOptions, *, where: str = "document") -> list[Chunk]:
    """The chunks of `text`. `tokenizer` must not truncate (a copy with truncation off); special tokens are not
    counted here: `options.tokens` already leaves room for them."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    offsets = [o for o in encoding.offsets if o[1] > o[0]]
    if not offsets:
        return []
    if len(offsets) <= options.tokens:
        return [Chunk(0, offsets[0][0], offsets[-1][1], len(offsets))]
    # Token index ranges of the sentences: a token belongs to the sentence its first character is in.
    starts = [s for s, _ in _sentences(text)]
    sentence_of = []
    k = 0
    for begin, _ in offsets:
        while k + 1 < len(starts) and begin >= starts[k + 1]:
            k += 1
        sentence_of.append(k)
    bounds = [0] + [i for i in range(1, len(offsets)) if sentence_of[i] != sentence_of[i - 1]] + [len(offsets)]
    pieces: list[tuple[int, int]] = []  # token ranges [a, b): whole sentences, or parts of one too long
    for a, b in itertools.pairwise(bounds):
        pieces += [(s, min(s + options.tokens, b)) for s in range(a, b, options.tokens)]

    chunks: list[Chunk] = []
    first = 0  # index into pieces of the current chunk's first piece
    while first < len(pieces):
        last = first
        while last + 1 < len(pieces) and pieces[last + 1][1] - pieces[first][0] <= options.tokens:
            last += 1
        a, b = pieces[first][0], pieces[last][1]
        chunks.append(Chunk(len(chunks), offsets[a][0], offsets[b - 1][1], b - a))
        if len(chunks) > options.max_chunks:
            raise ChunkingError(
                f"{where} makes more than {options.max_chunks} chunks of {options.tokens} tokens; split it, or raise "
                "the per-document cap"
            )
        if last + 1 >= len(pieces):
            break
        # The next chunk repeats the trailing whole pieces that fit in the overlap (never all of this chunk).
        nxt = last + 1
        while nxt - 1 > first and pieces[last][1] - pieces[nxt - 1][0] <= options.overlap:
            nxt -= 1
        first = nxt
    return chunks


# ---- the layout of a document corpus in Milvus ---------------------------------------------------------------
#
# Every Milvus row of a document corpus is one chunk of one document: its key is the document's id and the chunk's
# position packed into one INT64 (so a chunk has a stable key, and a document's chunks a known key range), with
# the document's id and the position also as scalar fields (grouping, filters, deletes) and the chunk's text as
# `passage` (what BM25 searches, and what a hit shows). An unchunked document corpus is the same with one chunk
# per document. MongoDB keeps one document per document id.

DOCUMENT_FIELD = "doc_id"
POSITION_FIELD = "chunk"
PASSAGE_FIELD = "passage"
CHUNK_FIELDS = (DOCUMENT_FIELD, POSITION_FIELD, PASSAGE_FIELD)
POSITIONS = 1024  # chunk positions per document id: the most chunks a document may have
MAX_DOCUMENT_ID = (2**63 - 1) // POSITIONS  # the largest document id whose chunk keys fit INT64


def chunk_key(document_id: int, position: int) -> int:
    """The Milvus primary key of a document's chunk."""
    if not 0 <= document_id <= MAX_DOCUMENT_ID:
        raise ChunkingError(f"document id {document_id} is outside 0..{MAX_DOCUMENT_ID} (ids of a document corpus)")
    if not 0 <= position < POSITIONS:
        raise ChunkingError(f"chunk position {position} is outside 0..{POSITIONS - 1}")
    return document_id * POSITIONS + position


def stale_passages(counts: dict[int, int], deleted: Sequence[int]) -> str:
    """The Milvus filter of passages to delete after a batch: those past each upserted document's new count (a
    shorter new version) and every passage of deleted documents; "" when there are none."""
    parts = [f"({DOCUMENT_FIELD} == {int(d)} and {POSITION_FIELD} >= {int(n)})" for d, n in counts.items()]
    if deleted:
        parts.append(f"{DOCUMENT_FIELD} in [{', '.join(str(int(d)) for d in deleted)}]")
    return " or ".join(parts)


def positions_by_document(rows: Iterable[dict[str, Any]]) -> dict[int, set[int]]:
    """Query rows (`doc_id`, `chunk`) as each document's passage positions."""
    out: dict[int, set[int]] = {}
    for r in rows:
        out.setdefault(int(r[DOCUMENT_FIELD]), set()).add(int(r[POSITION_FIELD]))
    return out


def passages_settled(present: dict[int, set[int]], counts: dict[int, int], deleted: Sequence[int]) -> bool:
    """Whether a batch's passages are what it wrote: each upserted document exactly its new positions, each
    deleted one none."""
    exact = all(present.get(d, set()) == set(range(n)) for d, n in counts.items())
    return exact and not any(present.get(d) for d in deleted)


_FIELD_RE = re.compile(r"\{([^{}]*)\}")


def template_fields(template: str) -> list[str]:
    """The field names a template such as "{title}. {body}" reads, in order; refuses one that reads none."""
    names = [m.group(1).strip() for m in _FIELD_RE.finditer(template)]
    if not names or any(not n for n in names):
        raise ChunkingError(f"encode template {template!r} must name fields in braces, e.g. '{{title}}. {{body}}'")
    return list(dict.fromkeys(names))


def render(template: str, fields: dict[str, object], *, where: str = "document") -> str:
    """The text a template makes of a document's fields. A missing field is an error naming it. Text between
    fields is kept only where the fields beside it are not empty, so "{title}. {text}" of a document without a
    title is its text, not ". text"."""
    missing = [n for n in template_fields(template) if n not in fields]
    if missing:
        have = ", ".join(sorted(fields)) or "none"
        raise ChunkingError(f"{where} has no field {missing[0]!r} (the encode template reads it; fields: {have})")
    parts = _FIELD_RE.split(template)  # literal, field, literal, field, ..., literal
    values = [_text(fields[parts[i].strip()]) for i in range(1, len(parts), 2)]
    out: list[str] = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(values[i // 2])
            continue
        beside = [values[j] for j in (i // 2 - 1, i // 2) if 0 <= j < len(values)]
        if all(beside):
            out.append(part)
    return "".join(out).strip()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value).strip()


def window(max_seq_len: int, special_tokens: int, prompt_tokens: int) -> int:
    """Word pieces of a document a model sees in one pass: its maximum length less special tokens and prompt."""
    return max_seq_len - special_tokens - prompt_tokens
