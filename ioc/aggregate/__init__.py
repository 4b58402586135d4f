"""Event-time window maths (pure): tumbling windows, partial aggregates, lateness."""

from ._window import Agg, EntityWindows, Rollup, rollup_key, window_start

__all__ = ["Agg", "EntityWindows", "Rollup", "rollup_key", "window_start"]
