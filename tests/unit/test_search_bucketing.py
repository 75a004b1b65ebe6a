"""Bucketing: sticky sha256 buckets per layer salt, ratios honoured, layers independent, pinning."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from services.search.bucketing import assign, bucket_of, pick
from services.search.config.model import BUCKETS, Experiment, Layer, RankArgs, Scene, bucket_bounds
from services.search.errors import InvalidQueryError

N_USERS = 10_000


def _layer(name: str, ratios: list[float], *, salt: str | None = None, bucketizer: str = "sha256") -> Layer:
    exps = tuple(Experiment(f"{name}.e{i}", name, "rank", r, RankArgs()) for i, r in enumerate(ratios))
    return Layer(name, "rank", bucketizer, salt or name, exps, bucket_bounds(ratios))  # type: ignore[arg-type]


def _binomial_ok(count: int, n: int, p: float, z: float = 4.5) -> bool:
    # 4.5 sigma: a correct hash fails this about once in 300 000 checks.
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_bounds_cover_all_buckets_in_proportion() -> None:
    assert bucket_bounds([0.5, 0.5]) == (5000, 10000)
    assert bucket_bounds([0.1, 0.2, 0.7]) == (1000, 3000, 10000)
    # Ratios that do not sum to 1 are normalised; thirds round without gaps or overlap.
    assert bucket_bounds([1, 1, 1]) == (3333, 6667, 10000)
    # 0.01% granularity: a 0.0001 share still owns one bucket.
    assert bucket_bounds([0.0001, 0.9999]) == (1, 10000)
    # Shares below a bucket get none, and nothing loops on rounding.
    b = bucket_bounds([1e-9] * 1000 + [1.0])
    assert b[-1] == BUCKETS
    assert list(b) == sorted(b)


def test_bucket_is_sticky_and_in_range() -> None:
    assert bucket_of("10", "rank.qa") == bucket_of("10", "rank.qa")
    assert all(0 <= bucket_of(str(u), "x") < BUCKETS for u in range(1000))


@pytest.mark.parametrize("ratios", [[0.5, 0.5], [0.1, 0.3, 0.6], [0.01, 0.99]])
def test_ten_thousand_users_match_the_ratios(ratios: list[float]) -> None:
    layer = _layer("rank.qa", ratios)
    counts = Counter(pick(layer, f"user-{u}")[0].name for u in range(N_USERS))
    total = sum(ratios)
    chi2 = 0.0
    for i, r in enumerate(ratios):
        p = r / total
        c = counts[f"rank.qa.e{i}"]
        assert _binomial_ok(c, N_USERS, p), (ratios, counts)
        chi2 += (c - N_USERS * p) ** 2 / (N_USERS * p)
    # chi-square critical values at p = 0.001 for 1 and 2 degrees of freedom.
    assert chi2 < {1: 10.83, 2: 13.82}[len(ratios) - 1]


def test_layers_with_their_own_salt_are_independent() -> None:
    a, b = _layer("match.qa", [0.5, 0.5]), _layer("rank.qa", [0.5, 0.5])
    table = Counter((pick(a, str(u))[0].name[-1], pick(b, str(u))[0].name[-1]) for u in range(N_USERS))
    # 2x2 contingency chi-square against independence (1 dof, p = 0.001: 10.83).
    rows = {k: table[(k, "0")] + table[(k, "1")] for k in "01"}
    cols = {k: table[("0", k)] + table[("1", k)] for k in "01"}
    chi2 = sum(
        (table[(r, c)] - rows[r] * cols[c] / N_USERS) ** 2 / (rows[r] * cols[c] / N_USERS) for r in "01" for c in "01"
    )
    assert chi2 < 10.83, table
    # The reference's defect: one salt for every layer makes the assignments identical.
    same = _layer("rank.qa", [0.5, 0.5], salt="match.qa")
    assert all(pick(a, str(u))[0].name[-1] == pick(same, str(u))[0].name[-1] for u in range(1000))


def test_random_bucketizer_follows_ratios_without_stickiness() -> None:
    layer = _layer("rank.qa", [0.2, 0.8], bucketizer="random")
    rng = random.Random(7)
    counts = Counter(pick(layer, "same-user", rng)[0].name for _ in range(N_USERS))
    assert len(counts) == 2
    assert _binomial_ok(counts["rank.qa.e0"], N_USERS, 0.2)


def test_pinning_overrides_the_bucket_and_bad_pins_are_422() -> None:
    layer = _layer("rank.qa", [0.5, 0.5])
    scene = Scene("questionAnswer", (layer,))
    for u in range(50):
        assert assign(scene, str(u), pinned={"rank.qa": "rank.qa.e1"})["rank.qa"].name == "rank.qa.e1"
    with pytest.raises(InvalidQueryError, match="no experiment 'nope'"):
        assign(scene, "1", pinned={"rank.qa": "nope"})
    with pytest.raises(InvalidQueryError, match=r"no layer 'match\.x'"):
        assign(scene, "1", pinned={"match.x": "rank.qa.e1"})
