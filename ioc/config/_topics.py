"""Settings of the topics: partition counts per topic, over the catalogue's defaults."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt

from ..topics import CATALOGUE, TopicSpec, spec
from ._base import Section

__all__ = ["SINGLE_PARTITION", "TopicSettings"]

SINGLE_PARTITION: dict[str, str] = {
    "views": "the merge topic of the global views: one views stage owns every KPI value and "
             "alert (docs/aggregation.md, Global views)",
    "scorecards": "the leaderboard stage sees every unit of a scorecard",
}
"""Topics that have one partition by design (and why): their count is not a setting."""

_KNOWN = {t.suffix for t in CATALOGUE}


def _topic_suffix(key: str) -> str:
    # '_' for '.' lets an environment variable name a topic (IOC_TOPICS__PARTITIONS__EVENTS_RAW);
    # no catalogue suffix contains '_'
    suffix = key.replace("_", ".")
    if suffix in SINGLE_PARTITION:
        raise ValueError(f"topic {suffix!r} has one partition by design ({SINGLE_PARTITION[suffix]}); "
                         "its count is not configurable")
    if suffix not in _KNOWN:
        raise ValueError(f"no topic {key!r} in the catalogue; known: {sorted(_KNOWN - set(SINGLE_PARTITION))}")
    return suffix


TopicSuffix = Annotated[str, AfterValidator(_topic_suffix)]
PartitionCount = Annotated[StrictInt, Field(ge=1, le=10_000)]


class TopicSettings(Section):
    """How the catalogue's topics are created: partition counts over its defaults."""

    partitions: dict[TopicSuffix, PartitionCount] = Field(
        default_factory=dict,
        description="partition count per topic suffix, e.g. {events.raw: 8, events: 8, "
                    "rollups: 8}, over the catalogue's defaults (`ioc topics list`); a stage "
                    "scales to as many workers as its input topic has partitions, and its "
                    "state tables' changelogs get the same count. Applies when `ioc topics "
                    "ensure` creates a topic; a live topic's count cannot be changed in place "
                    "(docs/operations.md, Partition counts). In environment variables write "
                    "'_' for '.': IOC_TOPICS__PARTITIONS__EVENTS_RAW=8")

    def spec(self, suffix: str) -> TopicSpec:
        """The catalogue entry for ``suffix`` with its configured partition count.

        Raises:
            KeyError: ``suffix`` is not in the catalogue (the message names the known ones).
        """
        base = spec(suffix)
        n = self.partitions.get(suffix)
        return base if n is None or n == base.partitions else dataclasses.replace(base, partitions=n)

    def catalogue(self) -> tuple[TopicSpec, ...]:
        """Every catalogue entry, with the configured partition counts."""
        return tuple(self.spec(t.suffix) for t in CATALOGUE)
