"""Event-time window maths (pure): tumbling windows, partial aggregates, lateness."""

from ._throttle import TokenBucket, UpdateThrottle
from ._window import Agg, EntityWindows, Rollup, WindowId, rollup_key, window_start

__all__ = ["Agg", "EntityWindows", "Rollup", "TokenBucket", "UpdateThrottle", "WindowId", "rollup_key", "window_start"]
