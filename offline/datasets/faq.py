"""The English Swedish Construction FAQ (PyPI zaragoza-construction-faq, CC BY 4.0, Zaragoza AB).

Written as raw jsonl ``{"id", "q", "a", "category", "source_id"}``: ids are integers numbered in the
package's order (its own ids are strings such as "bygglov-001", kept as source_id), so re-running gives
the same ids.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mmsearch.files import atomic_text_writer

ATTRIBUTION = "Swedish Construction FAQ by Zaragoza AB, CC BY 4.0 (PyPI zaragoza-construction-faq)"
FIELD_MAP = {"question": "q", "answer": "a", "category": "category"}


class FaqEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    category: str
    q: str
    a: str


class FaqFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    questions: list[FaqEntry]


def load_faq() -> list[FaqEntry]:
    raw = resources.files("zaragoza_construction_faq").joinpath("data/faq-en.json").read_bytes()
    return FaqFile.model_validate_json(raw).questions


def write_faq(path: Path) -> int:
    """Write the FAQ as raw jsonl; returns the number of rows."""
    entries = load_faq()
    with atomic_text_writer(path) as out:
        for n, e in enumerate(entries, start=1):
            row = {"id": n, "q": e.q, "a": e.a, "category": e.category, "source_id": e.id}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(entries)
