"""Demo feeds: recorded sensor series replayed as live events, plus e-government events."""

from ._plan import AGENCIES, EgovGenerator, FeedPlan
from ._sources import Series, data_dir, load_series, synthetic_series

__all__ = ["AGENCIES", "EgovGenerator", "FeedPlan", "Series", "data_dir", "load_series",
           "synthetic_series"]
