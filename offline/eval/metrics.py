"""Ranking metrics of one query: the ranked ids a search returned against the judged grades of that query.

Recall@k counts documents with grade > 0; MRR@k is 1 / rank of the first of them within k; nDCG@k uses the graded
gain 2^grade - 1 with a log2(rank + 1) discount, against the ideal order of all judged documents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    if not wanted:
        raise ValueError("recall needs at least one relevant document")
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    def dcg(grades: Sequence[int]) -> float:
        return sum((2.0**g - 1) / math.log2(rank + 1) for rank, g in enumerate(grades, start=1))

    ideal = dcg(sorted(relevant.values(), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("nDCG needs at least one relevant document")
    return dcg([relevant.get(doc, 0) for doc in ranked[:k]]) / ideal


def query_metrics(ranked: Sequence[str], relevant: Mapping[str, int], ks: Sequence[int]) -> dict[str, float]:
    """Every metric of one query, keyed as the report names them: recall@k for each k, mrr@10, ndcg@10."""
    out = {f"recall@{k}": recall_at(ranked, relevant, k) for k in ks}
    out["mrr@10"] = mrr_at(ranked, relevant, 10)
    out["ndcg@10"] = ndcg_at(ranked, relevant, 10)
    return out
