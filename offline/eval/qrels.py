"""Judged queries: which documents are relevant to a query, and how much (a grade; 0 is "judged not relevant").

Two formats:
- jsonl, one object a line: `{"query": "...", "relevant": {"<id>": <grade>, ...}}`;
- TREC: a qrels file of `<qid> <iteration> <doc id> <grade>` lines plus a topics file of `<qid><TAB><query>` lines.
Every problem is reported with its file and line; nothing is skipped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from offline.errors import OfflineError


class QrelsError(OfflineError):
    pass


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(min_length=1)
    relevant: dict[str, int] = Field(min_length=1)  # document id -> grade (>= 0)

    @field_validator("relevant")
    @classmethod
    def _grades(cls, value: dict[str, int]) -> dict[str, int]:
        negative = [doc for doc, grade in value.items() if grade < 0]
        if negative:
            raise ValueError(f"grades must be >= 0 (got a negative grade for {', '.join(negative[:3])})")
        if not any(grade > 0 for grade in value.values()):
            raise ValueError("at least one document must be relevant (grade > 0)")
        return value


def read_jsonl(path: Path) -> list[Judgement]:
    if not path.is_file():
        raise QrelsError(f"qrels file {path} does not exist")
    out: list[Judgement] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Judgement.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise QrelsError(f"{path} line {n}: not a judged query ({_short(exc)})") from exc
    if not out:
        raise QrelsError(f"{path} holds no judged queries")
    return out


def read_trec(qrels: Path, topics: Path) -> list[Judgement]:
    """TREC (`<qid> <iteration> <doc id> <grade>`) or BEIR (`query-id corpus-id score`, a header line) qrels, with
    a topics file: `<qid><TAB><query>` lines, or a BEIR queries.jsonl (`{"_id" or "id", "text"}`).

    A qid without a topic is an error. A tab-separated topic without judgements is too (it would silently drop a
    query); a BEIR queries.jsonl lists every query of a collection, and the qrels choose which are judged, so its
    unjudged queries are left out."""
    for path in (qrels, topics):
        if not path.is_file():
            raise QrelsError(f"{path} does not exist")
    beir = topics.suffix == ".jsonl"
    texts = _jsonl_topics(topics) if beir else _tsv_topics(topics)
    grades: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or (n == 1 and parts[0] == "query-id"):
            continue
        if len(parts) == 3:  # BEIR
            parts = [parts[0], "0", parts[1], parts[2]]
        if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
            raise QrelsError(f"{qrels} line {n}: expected '<qid> <iteration> <doc id> <grade>'")
        qid, _, doc, grade = parts
        if qid not in texts:
            raise QrelsError(f"{qrels} line {n}: query {qid!r} has no text in {topics}")
        grades.setdefault(qid, {})[doc] = int(grade)
    unjudged = sorted(set(texts) - set(grades))
    if unjudged and not beir:
        raise QrelsError(f"{topics}: {len(unjudged)} topics have no judgements in {qrels} (e.g. {unjudged[0]!r})")
    try:
        return [Judgement(query=texts[qid], relevant=rel) for qid, rel in grades.items()]
    except ValidationError as exc:
        raise QrelsError(f"{qrels}: {_short(exc)}") from exc


def _tsv_topics(topics: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for n, line in enumerate(topics.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise QrelsError(f"{topics} line {n}: expected '<qid><TAB><query text>'")
        texts[qid.strip()] = text.strip()
    return texts


def _jsonl_topics(topics: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for n, line in enumerate(topics.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            qid = row.get("_id", row.get("id"))
            text = row["text"]
        except (json.JSONDecodeError, AttributeError, KeyError):
            raise QrelsError(f'{topics} line {n}: expected a query {{"_id" or "id", "text"}}') from None
        if qid is None or not isinstance(text, str) or not text.strip():
            raise QrelsError(f'{topics} line {n}: expected a query {{"_id" or "id", "text"}}')
        texts[str(qid)] = text.strip()
    return texts


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()[:3])
    return str(exc).splitlines()[0]
