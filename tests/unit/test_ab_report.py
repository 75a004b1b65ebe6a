"""`mmsearch ab report`'s statistics against published values, and its counting rules on hand-made outcomes."""

from __future__ import annotations

import datetime as dt

import click
import pytest

from offline.ab.cli import parse_since
from offline.ab.report import LayerPlan, build_report
from offline.ab.stats import chi2_sf, newcombe_diff, srm_p, wilson

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_wilson_interval_matches_the_published_example() -> None:
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_newcombe_difference_matches_the_published_example() -> None:
    # Newcombe (1998), method 10, example (a): 56/70 - 48/80 = 0.2000, interval 0.0524 to 0.3339.
    d, lo, hi = newcombe_diff(56, 70, 48, 80)
    assert (d, lo, hi) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),
        (5.991464547107979, 2, 0.05),
        (13.815510557964274, 2, 0.001),
        (16.26623619623813, 3, 0.001),
        (11.070497693516351, 5, 0.05),
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_tail_at_the_tables_critical_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


def test_srm_against_configured_ratios() -> None:
    assert srm_p({"a": 500, "b": 500}, {"a": 0.5, "b": 0.5}) == (0.0, 1.0)
    chi2, p = srm_p({"a": 600, "b": 400}, {"a": 0.5, "b": 0.5})
    assert chi2 == pytest.approx(40.0)
    assert p < 1e-9
    # Ratios need not sum to 1, and an experiment switched off (ratio 0) is not part of the test.
    assert srm_p({"a": 300, "b": 100, "c": 7}, {"a": 3, "b": 1, "c": 0}) == (0.0, 1.0)


def _exposure(rid: str, user: str, exp: str, *, pinned: bool = False) -> dict[str, object]:
    return {
        "requestId": rid,
        "userId": user,
        "experiments": [{"layer": "match.qa", "experiment": exp}],
        "pinned": pinned,
    }


def _event(rid: str, kind: str, position: int, minute: int) -> dict[str, object]:
    return {"requestId": rid, "event": kind, "position": position, "time": T0 + dt.timedelta(minutes=minute)}


def test_report_counts_clicked_searches_first_click_rank_and_leaves_pinned_requests_out() -> None:
    exposures = [
        _exposure("r1", "u1", "base"),
        _exposure("r2", "u1", "base"),
        _exposure("r3", "u2", "base"),
        _exposure("r4", "u3", "hybrid"),
        _exposure("r5", "u4", "hybrid"),
        _exposure("r6", "u5", "hybrid", pinned=True),  # an eval run: not random assignment
    ]
    events = [
        # r1: two clicks, the earlier at position 3 is the first click; one search with a click.
        _event("r1", "click", 1, minute=2),
        _event("r1", "click", 3, minute=1),
        _event("r1", "like", 3, minute=3),
        _event("r4", "click", 2, minute=1),
        _event("r5", "dislike", 1, minute=1),
        _event("r6", "click", 1, minute=1),
    ]
    plan = {"match.qa": LayerPlan({"base": 0.5, "hybrid": 0.5})}
    rep = build_report("questionAnswer", exposures, events, plan, since=T0, until=T0 + dt.timedelta(days=1))
    assert (rep["requests"], rep["pinned_requests"]) == (6, 1)
    base, hybrid = rep["layers"]["match.qa"]["base"], rep["layers"]["match.qa"]["hybrid"]
    assert (base["users"], base["exposures"], base["clicks"], base["click_events"], base["likes"]) == (2, 3, 1, 2, 1)
    assert base["ctr"] == pytest.approx(1 / 3)
    assert base["ctr_ci"] == pytest.approx(list(wilson(1, 3)))
    assert base["mrr_first_click"] == pytest.approx(1 / 3)
    assert base["diff"] is None
    assert (hybrid["users"], hybrid["exposures"], hybrid["clicks"], hybrid["dislikes"]) == (2, 2, 1, 1)
    assert hybrid["mrr_first_click"] == pytest.approx(0.5)
    d, lo, hi = newcombe_diff(1, 2, 1, 3)
    assert hybrid["diff"] == {"vs": "base", "ctr": pytest.approx(d), "ci": pytest.approx([lo, hi])}
    assert rep["srm"]["match.qa"]["observed"] == {"base": 2, "hybrid": 2}
    assert rep["srm"]["match.qa"]["flag"] is False


def test_a_layer_assigned_per_request_is_checked_on_exposures() -> None:
    exposures = [_exposure(f"r{i}", "same-user", "base" if i % 4 else "hybrid") for i in range(400)]
    plan = {"match.qa": LayerPlan({"base": 0.5, "hybrid": 0.5}, per_request=True)}
    rep = build_report("s", exposures, [], plan, since=T0, until=T0)
    srm = rep["srm"]["match.qa"]
    assert srm["unit"] == "exposures"
    assert srm["observed"] == {"base": 300, "hybrid": 100}
    assert srm["flag"] is True


def test_since_takes_spans_and_dates() -> None:
    now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    assert parse_since("7d", now) == now - dt.timedelta(days=7)
    assert parse_since("90m", now) == now - dt.timedelta(minutes=90)
    assert parse_since("2026-11-01", now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with pytest.raises(click.BadParameter, match="7d"):
        parse_since("last week", now)
