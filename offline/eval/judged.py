"""Judged query sets derived from the demo corpora, by rules stated here and in each set's README; no judgement
comes from a model (least of all the one under test).

FAQ (`data/judged/faq/queries.jsonl`): for every FAQ entry whose answer opens with a sentence of 20 to 200
characters, that sentence is a query and the entry's own question document (its corpus id) is the one relevant
item, grade 1. A search that returns the question for its own answer's opening has found the right entry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmsearch.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
FAQ_QUERIES = ROOT / "data" / "judged" / "faq" / "queries.jsonl"
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def faq_answer_queries() -> list[dict[str, object]]:
    from offline.datasets.faq import load_faq

    out: list[dict[str, object]] = []
    for n, entry in enumerate(load_faq(), start=1):  # the corpus ids of offline.datasets.faq.write_faq
        found = _SENTENCE.match(entry.a.strip())
        first = " ".join(found.group(1).split()) if found else ""
        if 20 <= len(first) <= 200:
            out.append({"query": first, "relevant": {str(n): 1}})
    return out


def write_faq_queries(path: Path = FAQ_QUERIES) -> int:
    rows = faq_answer_queries()
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


if __name__ == "__main__":
    print(f"{write_faq_queries()} judged queries written to {FAQ_QUERIES}")
