"""The normalised corpus rows: the contract between preprocess, index, push and the search side.

QA:     {"id": int, "question": str, "answer": str, "category": [str, ...]}
Images: {"id": int, "name": str, "image": local path, "url": str}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist (write it with `mmsearch preprocess`)")
    seen: set[int] = set()
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = CorpusRow.model_validate(json.loads(raw))
            except (ValueError, ValidationError) as exc:
                raise CorpusError(f"{path} line {n}: not a normalised corpus row ({_short(exc)})") from exc
            if row.id in seen:
                raise CorpusError(f"{path} line {n}: duplicate id {row.id}")
            seen.add(row.id)
            yield n, row


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()
    return "; ".join(t.strip() for t in text[:3])
