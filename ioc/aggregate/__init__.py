"""Event-time window maths (pure): tumbling windows, partial aggregates, lateness."""

from ._throttle import UpdateThrottle
from ._window import Agg, EntityWindows, Rollup, WindowId, rollup_key, window_start

__all__ = ["Agg", "EntityWindows", "Rollup", "UpdateThrottle", "WindowId", "rollup_key", "window_start"]
