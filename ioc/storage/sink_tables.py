"""The explicit list of tables ``ioc sink`` writes. Add one line per ``TableSink``.

Kept as a function so importing this module loads no domain code; each owner adds
its spec here (no discovery, no import side effects).
"""

from __future__ import annotations

from .sink import TableSink

__all__ = ["sink_tables"]


def sink_tables() -> list[TableSink]:
    """Every ``TableSink`` a plain ``ioc sink`` runs, in order."""
    from ..aggregate._storage import ROLLUPS_SINK
    from ..camera_storage import CAMERA_HEALTH_SINK, DETECTIONS_SINK
    from ..events._storage import EVENTS_SINK
    from ..kpi._storage import KPI_VALUES_SINK
    from ..rules._storage import ALERTS_SINK
    from ..scorecard._storage import SCORECARD_COUNTS_SINK
    from ..wall._storage import ALERT_ACTIONS_SINK

    return [
        EVENTS_SINK,
        DETECTIONS_SINK,
        CAMERA_HEALTH_SINK,
        ROLLUPS_SINK,
        KPI_VALUES_SINK,
        ALERTS_SINK,
        ALERT_ACTIONS_SINK,
        SCORECARD_COUNTS_SINK,
    ]
