"""Judged query sets derived from the demo corpora, by rules stated here and in each set's README; no judgement
comes from a model (least of all the one under test).

FAQ (`data/judged/faq/queries.jsonl`): for every FAQ entry whose answer opens with a sentence of 20 to 200
characters, that sentence is a query and the entry's own question document (its corpus id) is the one relevant
item, grade 1. A search that returns the question for its own answer's opening has found the right entry.

Chatterbot (`data/judged/chatterbot/queries.jsonl`): for every utterance -> reply pair whose reply is 15 to 200
characters long and occurs once in its language (a reply such as "Yes." answers many things and judges nothing),
the reply is a query and every pair of the same language whose utterance is that pair's utterance (case and white
space folded) is relevant, grade 1: the corpus is searched by utterance, and the same utterance recurs in several
conversations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmsearch.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
FAQ_QUERIES = ROOT / "data" / "judged" / "faq" / "queries.jsonl"
CHATTERBOT_QUERIES = ROOT / "data" / "judged" / "chatterbot" / "queries.jsonl"
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


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def chatterbot_reply_queries() -> list[dict[str, object]]:
    from collections import Counter, defaultdict

    from offline.datasets.chatterbot import load_pairs

    pairs = load_pairs()  # ids 1..n in this order (offline.datasets.chatterbot.write_chatterbot)
    replies = Counter((p.language, _fold(p.answer)) for p in pairs)
    by_utterance: dict[tuple[str, str], list[str]] = defaultdict(list)
    for n, p in enumerate(pairs, start=1):
        by_utterance[(p.language, _fold(p.question))].append(str(n))
    out: list[dict[str, object]] = []
    for p in pairs:
        reply = " ".join(p.answer.split())
        if 15 <= len(reply) <= 200 and replies[(p.language, _fold(p.answer))] == 1:
            relevant = by_utterance[(p.language, _fold(p.question))]
            out.append({"query": reply, "relevant": dict.fromkeys(relevant, 1)})
    return out


def _write(path: Path, rows: list[dict[str, object]]) -> int:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def write_judged_sets() -> dict[Path, int]:
    return {
        FAQ_QUERIES: _write(FAQ_QUERIES, faq_answer_queries()),
        CHATTERBOT_QUERIES: _write(CHATTERBOT_QUERIES, chatterbot_reply_queries()),
    }


if __name__ == "__main__":
    for where, count in write_judged_sets().items():
        print(f"{count} judged queries written to {where}")
