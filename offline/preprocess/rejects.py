"""Rows that could not be used: each goes to a rejects jsonl with its line (or file) and reason, and is counted."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.files import atomic_text_writer


@dataclass(frozen=True)
class Reject:
    where: str  # "line 12" or a file name
    reason: str  # short, stable category, counted: "duplicate id", "malformed json", ...
    detail: str  # what exactly, for the person fixing the input
    raw: str = ""  # the offending input (truncated)


@dataclass
class PreprocessReport:
    output: Path
    rejects_file: Path
    written: int = 0
    rejects: list[Reject] = field(default_factory=list)
    skipped_blank: int = 0

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def by_reason(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejects)

    def summary(self) -> str:
        text = f"wrote {self.written} rows to {self.output}; rejected {self.rejected}"
        if self.rejects:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason().most_common())
            text += f" ({reasons}) -> {self.rejects_file}"
        if self.skipped_blank:
            text += f"; {self.skipped_blank} blank lines ignored"
        return text


def default_rejects_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejects.jsonl")


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """Always written (empty when all rows were good), so a stale rejects file never outlives a clean re-run."""
    with atomic_text_writer(path) as out:
        for r in rejects:
            row = {"where": r.where, "reason": r.reason, "detail": r.detail, "raw": r.raw[:2000]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
