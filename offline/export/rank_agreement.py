"""The rank gate of a cross-encoder's lower-precision variants: how much of the fp32 graph's top k the variant keeps.

A reranker's int8 graph is only worth serving if it orders documents as the fp32 one does; a logit difference says
little about that, since what matters is the difference against the spread of a query's scores. So the export
scores a ranking sample (queries, each with more than k candidate documents) with both graphs and records the mean
overlap of the two top-k sets; a variant below the gate is refused and nothing is published.

The sample is the user's (`--rank-sample`: jsonl lines {"query": "...", "documents": ["...", ...]}, ideally each
query with the candidates its recall returns) or, by default, the export's own parity texts, every one ranked
against every query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import RankAgreement
from offline.export.errors import ExportError

TOP_K = 10
# Issue 26's target for an int8 reranker against fp32 (top-10 overlap on the FAQ pairs).
DEFAULT_GATE = 0.95

QueryDocs = list[tuple[str, list[str]]]
# (model file, query, documents) -> the documents' scores under that graph, by the manifest's score rule
Scorer = Callable[[Path, str, list[str]], npt.NDArray[Any]]


@dataclass(frozen=True)
class RankSample:
    groups: QueryDocs
    description: str


def load_rank_sample(path: Path, k: int = TOP_K) -> RankSample:
    """Read a jsonl ranking sample; every line must hold a query and more than `k` documents (with k or fewer the
    top k is every document and the overlap is 1 whatever the graph does)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExportError(f"--rank-sample {path}: cannot read it: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ExportError(f"--rank-sample {path}: not UTF-8 text (byte {exc.start})") from exc
    groups: QueryDocs = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportError(f"--rank-sample {path} line {n}: not JSON ({exc.msg})") from exc
        query = row.get("query") if isinstance(row, dict) else None
        docs = row.get("documents") if isinstance(row, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ExportError(f'--rank-sample {path} line {n}: needs "query", a non-empty string')
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            raise ExportError(f'--rank-sample {path} line {n}: needs "documents", a list of strings')
        if len(docs) <= k:
            raise ExportError(
                f"--rank-sample {path} line {n}: {len(docs)} documents; the top {k} of a query is a choice only "
                f"with more than {k}"
            )
        groups.append((query, docs))
    if not groups:
        raise ExportError(f"--rank-sample {path}: no queries in it")
    docs_per_query = sorted({len(d) for _, d in groups})
    shape = str(docs_per_query[0]) if len(docs_per_query) == 1 else f"{docs_per_query[0]}-{docs_per_query[-1]}"
    return RankSample(groups, f"{len(groups)} queries x {shape} documents from {path.name}")


def top_k_overlap(reference: npt.NDArray[Any], candidate: npt.NDArray[Any], k: int = TOP_K) -> float:
    """|top k of candidate & top k of reference| / k for one query's scores (ties broken by position)."""
    if reference.shape != candidate.shape or reference.ndim != 1:
        raise ValueError(f"scores of different shapes: {reference.shape} vs {candidate.shape}")
    k = min(k, len(reference))
    ref = set(np.argsort(-reference, kind="stable")[:k].tolist())
    cand = set(np.argsort(-candidate, kind="stable")[:k].tolist())
    return len(ref & cand) / k


def rank_agreement(
    score: Scorer, fp32: Path, variant: Path, *, sample: RankSample, gate: float, k: int = TOP_K
) -> RankAgreement:
    overlaps = [top_k_overlap(score(fp32, q, docs), score(variant, q, docs), k) for q, docs in sample.groups]
    return RankAgreement(
        k=k,
        mean_overlap=round(float(np.mean(overlaps)), 4),
        min_overlap=round(float(np.min(overlaps)), 4),
        queries=len(overlaps),
        inputs=sample.description,
        gate=gate,
    )


def enforce_gate(key: str, variant: str, agreement: RankAgreement) -> None:
    if not agreement.mean_overlap >= agreement.gate:  # also catches NaN
        raise ExportError(
            f"the {variant} variant of {key!r} keeps {agreement.mean_overlap:.2f} of the fp32 graph's top "
            f"{agreement.k} (lowest query {agreement.min_overlap:.2f}) on {agreement.inputs}; the gate is "
            f"{agreement.gate:g}. Nothing was published: serve fp32, or pass --min-top10-overlap to accept a "
            "lower agreement"
        )
