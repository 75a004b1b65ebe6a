"""Lexical (BM25) fields of a corpus in Milvus itself: a VARCHAR field with an analyzer, a BM25 Function that fills
a SPARSE_FLOAT_VECTOR field from it, and a SPARSE_INVERTED_INDEX with metric BM25 (Milvus full-text search).

Not every store honours every analyzer, and a store that silently ignores one (milvus-lite accepts a stemmer
filter and does nothing with it) would give quietly worse recall. So the store is asked what it is before
anything is written, and an analyzer it cannot honour is refused with what it supports.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from offline.preprocess.records import CorpusRow
from offline.push.errors import PushError

VARCHAR_LIMIT = 65_535  # bytes of a Milvus VARCHAR
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,170}$")  # leaves room for the "_bm25" suffix
MIN_MILVUS = (2, 5)  # BM25 full-text search came with Milvus 2.5


class Analyzer(StrEnum):
    STANDARD = "standard"  # Unicode word splitting and lower-casing: most languages written with spaces
    JIEBA = "jieba"  # Chinese word segmentation (needs the jieba package where Milvus Lite runs)
    ENGLISH = "english"  # standard + English stemming and stop words (Milvus >= 2.5 server)


ANALYZER_PARAMS: dict[Analyzer, dict[str, Any]] = {
    Analyzer.STANDARD: {"type": "standard"},
    Analyzer.JIEBA: {"tokenizer": "jieba"},
    Analyzer.ENGLISH: {"type": "english"},
}
LITE_ANALYZERS = (Analyzer.STANDARD, Analyzer.JIEBA)


@dataclass(frozen=True)
class LexicalField:
    name: str
    max_length: int  # VARCHAR bytes


def check_store(server_version: str, analyzer: Analyzer) -> None:
    """Refuse, before anything is written, an analyzer (or BM25 at all) that this Milvus cannot honour."""
    if server_version.startswith("milvus_lite"):
        if analyzer not in LITE_ANALYZERS:
            raise PushError(
                f"--analyzer {analyzer}: Milvus Lite ({server_version}) supports "
                f"{', '.join(a.value for a in LITE_ANALYZERS)}; '{analyzer}' (stemming) needs a Milvus >= "
                f"{MIN_MILVUS[0]}.{MIN_MILVUS[1]} server. Use --analyzer standard here"
            )
        if analyzer == Analyzer.JIEBA and importlib.util.find_spec("jieba") is None:
            raise PushError("--analyzer jieba on Milvus Lite needs the jieba package: pip install jieba")
        return
    found = re.match(r"v?(\d+)\.(\d+)", server_version)
    if found is None or (int(found.group(1)), int(found.group(2))) < MIN_MILVUS:
        raise PushError(
            f"--lexical-field needs BM25 full-text search, which this Milvus server ({server_version}) lacks: it "
            f"came with Milvus {MIN_MILVUS[0]}.{MIN_MILVUS[1]}. Upgrade the server, or ingest without --lexical-field"
        )


def lexical_fields(names: list[str], rows: Iterable[CorpusRow], *, taken: set[str]) -> list[LexicalField]:
    """Check and size each lexical field: text in every row that has it (absent is ""), within VARCHAR's limit."""
    rows = list(rows)
    out: list[LexicalField] = []
    for name in dict.fromkeys(names):
        if name in taken:
            raise PushError(f"--lexical-field {name!r} is also a filter field or the id: a field can be only one")
        if not NAME_RE.match(name):
            raise PushError(f"--lexical-field {name!r} cannot be a Milvus field name")
        longest, present = 1, 0
        for row in rows:
            value = row.fields().get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise PushError(f"--lexical-field {name!r} of row {row.id} is {type(value).__name__}, not text")
            present += 1
            size = len(value.encode())
            if size > VARCHAR_LIMIT:
                raise PushError(
                    f"--lexical-field {name!r} of row {row.id} is {size} bytes; Milvus keeps at most {VARCHAR_LIMIT}"
                )
            longest = max(longest, size)
        if not present:
            raise PushError(f"--lexical-field: no row of the corpus has a {name!r} field")
        # Rounded up to a power of two, so re-runs with slightly longer texts keep the schema.
        out.append(LexicalField(name, min(VARCHAR_LIMIT, 1 << max(8, (longest - 1).bit_length()))))
    return out
