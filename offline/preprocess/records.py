"""The normalised corpus rows: the contract between preprocess, index, push and the search side.

QA:     {"id": int, "question": str, "answer": str, "category": [str, ...]}
Images: {"id": int, "name": str, "image": local path, "url": str}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from offline.errors import OfflineError

# Milvus INT64 primary keys; negative ids are legal there but never produced by our loaders, so refuse them.
MAX_ID = 2**63 - 1


class QARecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: StrictInt = Field(ge=0, le=MAX_ID)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    category: list[str] = Field(default_factory=list)


class ImageRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: StrictInt = Field(ge=0, le=MAX_ID)
    name: str = Field(min_length=1)
    image: str = Field(min_length=1)
    url: str = Field(min_length=1)


class CorpusRow(BaseModel):
    """Any normalised row, as index and push read it: an integer id plus the fields of its kind."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: StrictInt = Field(ge=0, le=MAX_ID)

    def field(self, name: str) -> Any:
        extra = self.model_extra or {}
        if name == "id":
            return self.id
        if name not in extra:
            raise KeyError(name)
        return extra[name]

    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CorpusError(OfflineError):
    """A normalised corpus file that index/push cannot read; the message names the file and line."""


def read_corpus(path: Path) -> Iterator[tuple[int, CorpusRow]]:
    """Yield (line number, row) from a normalised jsonl corpus written by `preprocess`.

    Unlike raw input, a normalised corpus must be clean: the first bad line stops the job with its number,
    so a corrupted file is never half-indexed.
    """
    for n, _, row in _scan(path):
        yield n, row


@dataclass(frozen=True)
class CorpusSegment:
    """Rows [first_row, first_row + count) of a corpus file: its bytes [start, end), from line `first_line`.

    The unit of work of a distributed job: a worker reads its rows by seeking, not the whole file."""

    index: int
    first_row: int
    count: int
    start: int
    end: int
    first_line: int


def plan_segments(path: Path, rows_per_segment: int) -> list[CorpusSegment]:
    """Cut a corpus into segments of `rows_per_segment` rows (the last may be shorter), validating every row
    with the rules of `read_corpus` (duplicate ids included) on the way."""
    segments: list[CorpusSegment] = []
    first_row = start = first_line = rows = end = 0
    for n, (offset, after), _ in _scan(path):
        if rows == 0:
            start, first_line = offset, n
        rows, end = rows + 1, after
        if rows == rows_per_segment:
            segments.append(CorpusSegment(len(segments), first_row, rows, start, end, first_line))
            first_row, rows = first_row + rows, 0
    if rows:
        segments.append(CorpusSegment(len(segments), first_row, rows, start, end, first_line))
    return segments


def read_segment(path: Path, segment: CorpusSegment) -> list[tuple[int, CorpusRow]]:
    """(line number, row) of one segment (planned by `plan_segments` on this same file)."""
    if not path.is_file():
        raise CorpusError(f"corpus file {path} is not visible here (a worker needs it on a shared filesystem)")
    rows: list[tuple[int, CorpusRow]] = []
    with path.open("rb") as f:
        f.seek(segment.start)
        n = segment.first_line
        for raw in f.read(segment.end - segment.start).split(b"\n"):
            if raw.strip():
                rows.append((n, _parse(path, n, raw)))
            n += 1
    if len(rows) != segment.count:
        raise CorpusError(f"{path}: segment {segment.index} holds {len(rows)} rows, planned {segment.count}")
    return rows


def _scan(path: Path) -> Iterator[tuple[int, tuple[int, int], CorpusRow]]:
    """(line number, (first byte, byte after), row) of every row, ids checked unique."""
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist (write it with `mmsearch preprocess`)")
    seen: set[int] = set()
    offset = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            row = _parse(path, n, raw)
            if row.id in seen:
                raise CorpusError(f"{path} line {n}: duplicate id {row.id}")
            seen.add(row.id)
            yield n, (start, offset), row


def _parse(path: Path, n: int, raw: bytes) -> CorpusRow:
    try:
        return CorpusRow.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise CorpusError(f"{path} line {n}: not a normalised corpus row ({_short(exc)})") from exc


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()
    return "; ".join(t.strip() for t in text[:3])
