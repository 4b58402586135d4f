"""E-government scorecards: counts per indicator/period/drill path, and pure scoring.

``ScorecardCounts`` (the stage's state) turns events into ``LeafCount``s; the sink
stores them (``scorecard_counts``); ``build_scorecard`` turns stored counts into
scores, area totals, target progress, rankings with rank change and data-quality
flags; ``kpi_entities`` renders them as NGSI-LD ``KeyPerformanceIndicator``s.
docs/scorecards.md, docs/adr/0004-scorecards.md.
"""

from ._counts import LeafCount, ScorecardCounts, drill_path, matches, path_key
from ._ngsi import NGSI_CONTEXT, kpi_entities, standing
from ._periods import PERIODS, period_bounds, period_key, previous_period
from ._score import (
    FLAGS,
    AreaResult,
    IndicatorResult,
    UnitScorecard,
    build_scorecard,
    competition_ranks,
    indicator_score,
    progress,
    rank_changes,
    ratio,
    roll_up,
    target_for,
)

__all__ = [
    "FLAGS",
    "NGSI_CONTEXT",
    "PERIODS",
    "AreaResult",
    "IndicatorResult",
    "LeafCount",
    "ScorecardCounts",
    "UnitScorecard",
    "build_scorecard",
    "competition_ranks",
    "drill_path",
    "indicator_score",
    "kpi_entities",
    "matches",
    "path_key",
    "period_bounds",
    "period_key",
    "previous_period",
    "progress",
    "rank_changes",
    "ratio",
    "roll_up",
    "standing",
    "target_for",
]
