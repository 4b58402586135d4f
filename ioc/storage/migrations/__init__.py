"""The ordered list of schema migrations. Append only; never renumber.

Version ranges by owner, so parallel work does not collide:
0001-0099 foundation, 0100-0199 city events, 0200-0299 cameras/vision,
0300-0399 wall, 0400-0499 record/replay/runs, 0500-0599 scorecards. A version may go between existing ones
(0160 after 0150): ``migrate`` applies every version not yet applied, in list order.
"""

from .._migrate import Migration
from . import (
    m0001_namespace,
    m0100_events,
    m0110_events_key_time_first,
    m0120_events_drop_type_index,
    m0150_aggregates,
    m0160_timescale_aggregates,
    m0200_cameras,
    m0210_timescale_cameras,
    m0300_alert_actions,
    m0400_runs,
    m0500_scorecards,
)

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[Migration] = [
    m0001_namespace.MIGRATION,
    m0100_events.MIGRATION,
    m0110_events_key_time_first.MIGRATION,
    m0120_events_drop_type_index.MIGRATION,
    m0150_aggregates.MIGRATION,
    m0160_timescale_aggregates.MIGRATION,
    m0200_cameras.MIGRATION,
    m0210_timescale_cameras.MIGRATION,
    m0300_alert_actions.MIGRATION,
    m0400_runs.MIGRATION,
    m0500_scorecards.MIGRATION,
]
