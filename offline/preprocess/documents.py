"""Raw document corpora (BEIR-style or generic jsonl) to normalised document rows, every unusable row rejected and
counted.

A document row is `{"id": int, <field>: value, ...}`: the fields the encode template reads, the filter fields and
the fields to store (all of the input's by default). BEIR's corpus.jsonl rows are `{"_id", "title", "text",
"metadata"?}`; its ids must be integers here (Milvus keys), as they are in the classic collections.
The chunk rows Milvus holds are made from these by offline/preprocess/chunks.py, with the model's tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmsearch.chunking import CHUNK_FIELDS, MAX_DOCUMENT_ID, ChunkingError, render, template_fields
from mmsearch.files import atomic_text_writer
from offline.preprocess.qa import PreprocessError, jsonl_rows, parse_id
from offline.preprocess.rejects import PreprocessReport, Reject, default_rejects_path, write_rejects


class DocumentFormat(StrEnum):
    BEIR = "beir"
    JSONL = "jsonl"


# BEIR's title is empty in some collections (MED): the template leaves the separator out then.
DEFAULT_TEMPLATE = {DocumentFormat.BEIR: "{title}. {text}"}
_DEFAULT_ID = {DocumentFormat.BEIR: ("_id", "id"), DocumentFormat.JSONL: ("id",)}


@dataclass(frozen=True)
class DocumentOptions:
    fmt: DocumentFormat
    template: str  # the text to encode, e.g. "{title}. {body}"
    id_fields: tuple[str, ...]  # the first one a row has is its id
    store: tuple[str, ...] | None = None  # None: every field of the input
    filter_fields: tuple[str, ...] = ()

    @classmethod
    def make(
        cls,
        fmt: DocumentFormat | str,
        *,
        template: str | None,
        id_field: str | None = None,
        store: list[str] | None = None,
        filter_fields: list[str] | None = None,
    ) -> DocumentOptions:
        fmt = DocumentFormat(fmt)
        chosen = template or DEFAULT_TEMPLATE.get(fmt)
        if not chosen:
            raise PreprocessError(
                f"--encode is required for --format {fmt}: the fields to encode, e.g. '{{title}}. {{body}}'"
            )
        try:
            template_fields(chosen)
        except ChunkingError as exc:
            raise PreprocessError(f"--encode: {exc}") from exc
        reserved = sorted(f for f in {*(store or ()), *(filter_fields or ())} if f in {"id", *CHUNK_FIELDS})
        if reserved:
            raise PreprocessError(
                f"field {reserved[0]!r} is mmsearch's own in a document corpus (id, {', '.join(CHUNK_FIELDS)}): "
                "rename it in the input"
            )
        return cls(
            fmt,
            chosen,
            (id_field,) if id_field else _DEFAULT_ID[fmt],
            tuple(store) if store else None,
            tuple(filter_fields or ()),
        )

    def kept(self, row: dict[str, Any]) -> dict[str, Any]:
        """The fields of a raw row the document keeps: stored, encoded and filtered ones."""
        if self.store is None:
            return {k: v for k, v in row.items() if k not in self.id_fields}
        wanted = {*self.store, *template_fields(self.template), *self.filter_fields}
        return {k: v for k, v in row.items() if k in wanted}


def normalise_document(row: dict[str, Any], opts: DocumentOptions, where: str) -> dict[str, Any] | Reject:
    """One raw row to a document row, or why it cannot be one."""
    raw = json.dumps(row, ensure_ascii=False, default=str)
    raw = raw if len(raw) <= 300 else raw[:300] + "..."
    key = next((f for f in opts.id_fields if f in row), None)
    if key is None:
        return Reject(where, "missing field", f"no id field ({' or '.join(map(repr, opts.id_fields))})", raw)
    try:
        rid = parse_id(row[key])
    except ValueError as exc:
        return Reject(where, "non-integer id", str(exc), raw)
    fields = opts.kept(row)
    problem = _problem(rid, row, fields, opts, where)
    if problem is not None:
        return Reject(where, problem[0], problem[1], raw)
    return {"id": rid, **fields}


def _problem(
    rid: int, row: dict[str, Any], fields: dict[str, Any], opts: DocumentOptions, where: str
) -> tuple[str, str] | None:
    """(reason, detail) of a row with a usable id that still cannot be a document; None when it can."""
    if rid > MAX_DOCUMENT_ID:
        return "id too large", f"id {rid} is above {MAX_DOCUMENT_ID}, the largest of a document corpus"
    taken = next((k for k in ("id", *CHUNK_FIELDS) if k in fields), None)
    if taken is not None:
        return "reserved field", f"field {taken!r} is mmsearch's own in a document corpus: rename it"
    try:
        text = render(opts.template, row, where=f"{where} (id {rid})")
    except ChunkingError as exc:
        return "missing field", str(exc)
    if not text:
        return "empty document", f"the encode template {opts.template!r} makes no text of id {rid}"
    absent = [f for f in opts.filter_fields if f not in row]
    if absent:
        return "missing field", f"no filter field {absent[0]!r} in id {rid}"
    return None


def preprocess_documents(
    input_path: Path, output: Path, opts: DocumentOptions, *, rejects_path: Path | None = None
) -> PreprocessReport:
    if not input_path.is_file():
        raise PreprocessError(f"input file {input_path} does not exist")
    report = PreprocessReport(output=output, rejects_file=rejects_path or default_rejects_path(output))
    first_line: dict[int, str] = {}
    with atomic_text_writer(output) as out:
        rows = jsonl_rows(input_path, report)
        for where, item in tqdm(rows, desc="preprocess documents", unit="docs", disable=None):
            doc = item if isinstance(item, Reject) else normalise_document(item, opts, where)
            if not isinstance(doc, Reject):
                rid = doc["id"]
                if rid in first_line:
                    doc = Reject(where, "duplicate id", f"id {rid} already used on {first_line[rid]}")
                else:
                    first_line[rid] = where
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    report.written += 1
                    continue
            report.rejects.append(doc)
    write_rejects(report.rejects_file, report.rejects)
    return report
