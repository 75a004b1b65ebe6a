"""Stage, matcher and ranker registries by name (the names the YAML uses)."""

from __future__ import annotations

from services.search.config.model import StageKind
from services.search.stages.base import Stage
from services.search.stages.match import MATCHERS, MatchStage
from services.search.stages.qp import QueryProcessing
from services.search.stages.rank import RANKERS, RankStage
from services.search.stages.summary import SummaryStage

STAGES: dict[StageKind, Stage] = {
    "qp": QueryProcessing(),
    "match": MatchStage(),
    "rank": RankStage(),
    "summary": SummaryStage(),
}

__all__ = ["MATCHERS", "RANKERS", "STAGES"]
