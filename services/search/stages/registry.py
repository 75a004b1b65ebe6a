"""Stage, matcher and ranker registries by name (the names the YAML uses)."""

from __future__ import annotations

from services.search.config.model import MATCHER_NAMES, RANKER_NAMES, StageKind
from services.search.stages.base import Stage
from services.search.stages.match import MATCHERS, MatchStage
from services.search.stages.qp import QueryProcessing
from services.search.stages.rank import RANKERS, RankStage
from services.search.stages.summary import SummaryStage

# A config may name exactly what is implemented (config/model.py owns the names).
if set(MATCHERS) != set(MATCHER_NAMES) or set(RANKERS) != set(RANKER_NAMES):
    raise RuntimeError(
        f"stage registries {sorted(MATCHERS)} / {sorted(RANKERS)} differ from the config's names "
        f"{sorted(MATCHER_NAMES)} / {sorted(RANKER_NAMES)}"
    )

STAGES: dict[StageKind, Stage] = {
    "qp": QueryProcessing(),
    "match": MatchStage(),
    "rank": RankStage(),
    "summary": SummaryStage(),
}

__all__ = ["MATCHERS", "RANKERS", "STAGES"]
