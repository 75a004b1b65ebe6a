"""Raw QA corpora (Baike-QA, generic jsonl, csv) to normalised QA rows, with every unusable row rejected and counted.

Baike-QA lines are ``{"qid", "category", "title", "desc", "answer"}``: the question is `desc`, falling back to
`title`; the category "a-b" becomes ["a", "b"]; ids are the row's ordinal (the qids are not integers), as the
reference did. Generic jsonl and csv rows are mapped field by field (``--map question=q,answer=a``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from mmsearch.files import atomic_text_writer
from offline.errors import OfflineError
from offline.preprocess.records import MAX_ID, QARecord
from offline.preprocess.rejects import PreprocessReport, Reject, default_rejects_path, write_rejects

TARGET_FIELDS = ("id", "question", "answer", "category", "title")
_INT_RE = re.compile(r"^\s*\+?\d+\s*$")


class PreprocessError(OfflineError):
    """The input as a whole cannot be used (missing file, csv header without a mapped column)."""


class QAFormat(StrEnum):
    BAIKE = "baike"
    JSONL = "jsonl"
    CSV = "csv"


_DEFAULT_MAP: dict[QAFormat, dict[str, str]] = {
    QAFormat.BAIKE: {"id": "qid", "question": "desc", "title": "title", "answer": "answer", "category": "category"},
    QAFormat.JSONL: {"id": "id", "question": "question", "answer": "answer", "category": "category"},
    QAFormat.CSV: {"id": "id", "question": "question", "answer": "answer", "category": "category"},
}
_DEFAULT_SEP: dict[QAFormat, str | None] = {QAFormat.BAIKE: "-", QAFormat.JSONL: None, QAFormat.CSV: "|"}

IdSource = Literal["field", "sequential"]


@dataclass(frozen=True)
class QAOptions:
    fmt: QAFormat
    mapping: dict[str, str]  # target field -> input field
    category_sep: str | None  # split string categories on this; None keeps a string as one category
    ids: IdSource

    @classmethod
    def for_format(
        cls,
        fmt: QAFormat | str,
        field_map: dict[str, str] | None = None,
        *,
        category_sep: str | None = "",
        ids: IdSource | None = None,
    ) -> QAOptions:
        """Defaults of the format, overridden by `field_map`; category_sep "" means the format's default."""
        fmt = QAFormat(fmt)
        mapping = {**_DEFAULT_MAP[fmt], **(field_map or {})}
        sep = _DEFAULT_SEP[fmt] if category_sep == "" else category_sep
        return cls(fmt, mapping, sep, ids or ("sequential" if fmt == QAFormat.BAIKE else "field"))


def parse_field_map(text: str | None) -> dict[str, str]:
    """'question=q,answer=a' -> {"question": "q", "answer": "a"}; names the bad part otherwise."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        target, sep, source = part.partition("=")
        target, source = target.strip(), source.strip()
        if not sep or not target or not source:
            raise PreprocessError(f"--map entry {part.strip()!r} is not FIELD=COLUMN (e.g. question=q)")
        if target not in TARGET_FIELDS:
            raise PreprocessError(f"--map: unknown field {target!r}; map one of {', '.join(TARGET_FIELDS)}")
        out[target] = source
    return out


def parse_id(value: Any) -> int:
    """An integer id in [0, 2^63-1], given as a JSON integer or a string of digits; ValueError says why not."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"id {value!r} is not an integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INT_RE.match(value):
        n = int(value)
    else:
        raise ValueError(f"id {value!r} is not an integer")
    if not 0 <= n <= MAX_ID:
        raise ValueError(f"id {n} is outside 0..2^63-1 (Milvus INT64 primary key)")
    return n


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | dict | list):
        raise TypeError(f"{type(value).__name__} is not text")
    return str(value).strip()


def _categories(value: Any, sep: str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(sep) if sep else [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise TypeError(f"category {value!r} is neither a string nor a list of strings")
    return [p.strip() for p in parts if p.strip()]


def _short(raw: str) -> str:
    return raw if len(raw) <= 300 else raw[:300] + "..."


def _row_id(row: dict[str, Any], opts: QAOptions, ordinal: int) -> int:
    if opts.ids == "sequential":
        return ordinal
    key = opts.mapping["id"]
    if key not in row:
        raise KeyError(key)
    return parse_id(row[key])


def normalise(row: dict[str, Any], opts: QAOptions, ordinal: int, where: str) -> QARecord | Reject:
    """One raw row to a QARecord, or the reason it cannot be one."""
    raw = _short(json.dumps(row, ensure_ascii=False, default=str))
    m = opts.mapping
    try:
        rid = _row_id(row, opts, ordinal)
        question = _text(row.get(m["question"]))
        if not question and "title" in m:
            question = _text(row.get(m["title"]))
        answer = _text(row.get(m["answer"]))
        category = _categories(row.get(m["category"]) if "category" in m else None, opts.category_sep)
    except KeyError as exc:
        return Reject(where, "missing field", f"no {exc.args[0]!r} field for the id (or use --ids sequential)", raw)
    except ValueError as exc:
        return Reject(where, "non-integer id", str(exc), raw)
    except TypeError as exc:
        return Reject(where, "bad field type", str(exc), raw)
    problem = None
    if not question:
        absent = m["question"] not in row and ("title" not in m or m["title"] not in row)
        problem = ("missing field", f"no {m['question']!r} field") if absent else ("empty question", "no question text")
    elif not answer:
        absent = m["answer"] not in row
        problem = ("missing field", f"no {m['answer']!r} field") if absent else ("empty answer", "no answer text")
    if problem:
        return Reject(where, problem[0], problem[1], raw)
    return QARecord(id=rid, question=question, answer=answer or "", category=category)


def jsonl_rows(path: Path, report: PreprocessReport) -> Iterator[tuple[str, dict[str, Any] | Reject]]:
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            where = f"line {n}"
            if not line.strip():
                report.skipped_blank += 1
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, Reject(where, "not utf-8", str(exc), line[:300].decode("utf-8", "replace"))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield where, Reject(where, "malformed json", exc.msg + f" at column {exc.colno}", _short(text.strip()))
                continue
            if not isinstance(obj, dict):
                yield where, Reject(where, "malformed json", "not a JSON object", _short(text.strip()))
                continue
            yield where, obj


def _csv_rows(path: Path, opts: QAOptions) -> Iterator[tuple[str, dict[str, Any] | Reject]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            needed = [
                m for k, m in opts.mapping.items() if k in ("question", "answer") or (k == "id" and opts.ids == "field")
            ]
            absent = [c for c in needed if c not in header]
            if absent:
                raise PreprocessError(
                    f"{path}: the csv header {header} has no column {', '.join(map(repr, absent))}; "
                    "map the columns with --map question=COL,answer=COL,id=COL"
                )
            start = reader.line_num + 1
            for row in reader:
                where = f"line {start}"
                start = reader.line_num + 1
                yield where, {k: v for k, v in row.items() if k is not None}
    except UnicodeDecodeError as exc:
        raise PreprocessError(f"{path} is not UTF-8 text ({exc}); convert it first (e.g. iconv -t utf-8)") from exc


def preprocess_qa(
    input_path: Path, output: Path, opts: QAOptions, *, rejects_path: Path | None = None
) -> PreprocessReport:
    if not input_path.is_file():
        raise PreprocessError(f"input file {input_path} does not exist")
    report = PreprocessReport(output=output, rejects_file=rejects_path or default_rejects_path(output))
    rows = _csv_rows(input_path, opts) if opts.fmt == QAFormat.CSV else jsonl_rows(input_path, report)
    first_line: dict[int, str] = {}
    with atomic_text_writer(output) as out:
        for ordinal, (where, item) in enumerate(tqdm(rows, desc="preprocess qa", unit="rows", disable=None), 1):
            rec = item if isinstance(item, Reject) else normalise(item, opts, ordinal, where)
            if isinstance(rec, QARecord):
                if rec.id in first_line:
                    rec = Reject(where, "duplicate id", f"id {rec.id} already used on {first_line[rec.id]}")
                else:
                    first_line[rec.id] = where
                    out.write(rec.model_dump_json() + "\n")
                    report.written += 1
                    continue
            report.rejects.append(rec)
    write_rejects(report.rejects_file, report.rejects)
    return report
