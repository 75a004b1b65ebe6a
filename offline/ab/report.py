"""`mmsearch ab report`'s numbers: the exposures and events of one scene in a time window, per layer and
experiment.

Definitions (what the columns mean):
- users: distinct userIds served by the experiment; exposures: answered searches it served.
- clicks: exposures with at least one click, so CTR = clicks / exposures is a proportion and gets a Wilson
  interval; click_events counts every click. likes / dislikes: events of those kinds.
- mrr_first_click: over clicked exposures, the mean of 1 / position of the first click (position 1 = top).
- diff: CTR minus the layer's first experiment's CTR, with Newcombe's 95% interval. Exposures are treated as
  independent; one user's searches are not, so with a few heavy users the true interval is wider.
- srm: Pearson chi-square of users per experiment (exposures, for a layer that assigns per request) against the
  configured ratios; flagged at p < 0.001. A mismatch means the split itself is broken (bots, a crashing
  experiment, caching), and no difference in that layer can be trusted.
Requests that pinned any layer (useDebug + specifiedLayerAndExperiment, as `mmsearch eval` does) were not
assigned at random: they are left out and counted as pinned_requests.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from offline.ab.stats import newcombe_diff, srm_p, wilson

SRM_ALPHA = 0.001


@dataclass
class _Tally:
    users: set[str] = field(default_factory=set)
    exposures: int = 0
    clicks: int = 0
    click_events: int = 0
    likes: int = 0
    dislikes: int = 0
    reciprocal_ranks: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LayerPlan:
    """What the A/B config says of a layer: its experiments in order (the first is the baseline), their ratios,
    and whether users (sha256) or requests (random) are assigned."""

    experiments: dict[str, float]
    per_request: bool = False


@dataclass
class _Events:
    first_click: tuple[dt.datetime, int] | None = None  # (time, position)
    clicks: int = 0
    likes: int = 0
    dislikes: int = 0

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "click":
            self.clicks += 1
            when, pos = event["time"], int(event["position"])
            if self.first_click is None or when < self.first_click[0]:
                self.first_click = (when, pos)
        elif kind == "like":
            self.likes += 1
        elif kind == "dislike":
            self.dislikes += 1


def build_report(
    scene: str,
    exposures: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    plan: Mapping[str, LayerPlan],
    *,
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, Any]:
    by_request: dict[str, _Events] = defaultdict(_Events)
    for ev in events:
        by_request[str(ev["requestId"])].add(ev)
    tallies: dict[str, dict[str, _Tally]] = {
        layer: {name: _Tally() for name in lp.experiments} for layer, lp in plan.items()
    }
    requests = pinned = 0
    for exp_doc in exposures:
        requests += 1
        if exp_doc.get("pinned"):
            pinned += 1
            continue
        outcome = by_request.get(str(exp_doc["requestId"]))
        for entry in exp_doc["experiments"]:
            t = tallies.setdefault(entry["layer"], {}).setdefault(entry["experiment"], _Tally())
            t.users.add(str(exp_doc["userId"]))
            t.exposures += 1
            if outcome is None:
                continue
            t.click_events += outcome.clicks
            t.likes += outcome.likes
            t.dislikes += outcome.dislikes
            if outcome.first_click is not None:
                t.clicks += 1
                t.reciprocal_ranks.append(1.0 / max(1, outcome.first_click[1]))
    layers: dict[str, Any] = {}
    srm: dict[str, Any] = {}
    for layer, by_exp in tallies.items():
        lp = plan.get(layer, LayerPlan({}))
        layers[layer] = _layer_rows(by_exp, lp)
        srm[layer] = _srm(by_exp, lp)
    return {
        "scene": scene,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "requests": requests,
        "pinned_requests": pinned,
        "layers": layers,
        "srm": srm,
    }


def _layer_rows(by_exp: Mapping[str, _Tally], lp: LayerPlan) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    names = list(lp.experiments) + [n for n in by_exp if n not in lp.experiments]
    base = by_exp.get(names[0]) if names else None
    for i, name in enumerate(names):
        t = by_exp.get(name, _Tally())
        lo, hi = wilson(t.clicks, t.exposures)
        row: dict[str, Any] = {
            "users": len(t.users),
            "exposures": t.exposures,
            "clicks": t.clicks,
            "click_events": t.click_events,
            "likes": t.likes,
            "dislikes": t.dislikes,
            "ctr": t.clicks / t.exposures if t.exposures else None,
            "ctr_ci": [lo, hi] if t.exposures else None,
            "mrr_first_click": sum(t.reciprocal_ranks) / len(t.reciprocal_ranks) if t.reciprocal_ranks else None,
            "ratio": lp.experiments.get(name),
            "diff": None,
        }
        if i > 0 and base is not None and t.exposures and base.exposures:
            d, dlo, dhi = newcombe_diff(t.clicks, t.exposures, base.clicks, base.exposures)
            row["diff"] = {"vs": names[0], "ctr": d, "ci": [dlo, dhi]}
        rows[name] = row
    return rows


def _srm(by_exp: Mapping[str, _Tally], lp: LayerPlan) -> dict[str, Any]:
    unit = "exposures" if lp.per_request else "users"
    observed = {n: (t.exposures if lp.per_request else len(t.users)) for n, t in by_exp.items()}
    if not lp.experiments:
        return {"p": None, "flag": False, "unit": unit, "note": "layer not in the config in force: no ratios"}
    chi2, p = srm_p(observed, lp.experiments)
    return {
        "p": p,
        "flag": p < SRM_ALPHA,
        "chi2": chi2,
        "unit": unit,
        "observed": {n: observed.get(n, 0) for n in lp.experiments},
    }
