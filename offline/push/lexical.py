"""Lexical (BM25) fields of a corpus in Milvus itself: a VARCHAR field with an analyzer, a BM25 Function that fills
a SPARSE_FLOAT_VECTOR field from it, and a SPARSE_INVERTED_INDEX with metric BM25 (Milvus full-text search).

Not every store honours every analyzer, and a store that silently ignores one (milvus-lite accepts a stemmer
filter and does nothing with it) would give quietly worse recall. So the store is asked what it is before
anything is written, and an analyzer it cannot honour is refused with what it supports.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from offline.push.errors import PushError

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
