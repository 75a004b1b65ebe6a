"""Paired comparison of two experiments over the same judged queries: the mean difference of a metric, a 95%
paired-bootstrap interval, and a paired randomisation (sign-flip) test p-value. Both are seeded, so a report can
be reproduced exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np


class Comparison(TypedDict):
    diff: float
    ci: list[float]
    p: float


def paired_bootstrap(
    diffs: Sequence[float], *, rounds: int = 10_000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile interval of the mean difference: queries resampled with replacement, `rounds` times."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired queries to compare")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(rounds, d.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def randomization_p(diffs: Sequence[float], *, rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of "no difference": each query's difference flips sign at random; p is the share of
    flipped means at least as far from 0 as the observed one (with the observed counted, so never 0)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired queries to compare")
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(rounds, d.size))
    flipped = np.abs((signs * d).mean(axis=1))
    # A tolerance, so that float noise in sums of equal magnitudes does not count a tie as smaller.
    extreme = int(np.count_nonzero(flipped >= observed - 1e-12))
    return (extreme + 1) / (rounds + 1)


def compare(base: Sequence[float], other: Sequence[float], *, seed: int = 0) -> Comparison:
    """`other` minus `base`, query by query (the same queries in the same order)."""
    if len(base) != len(other):
        raise ValueError(f"paired metrics need the same queries: {len(base)} vs {len(other)}")
    diffs = [o - b for b, o in zip(base, other, strict=True)]
    return Comparison(
        diff=float(np.mean(diffs)), ci=paired_bootstrap(diffs, seed=seed), p=randomization_p(diffs, seed=seed)
    )
