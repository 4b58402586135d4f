"""``AgentSpec``: a named agent and the function that registers it on a Faust app.

A *batch stage* agent (validate, aggregate, kpis, rules, tiles, ...) is made with
``AgentSpec.of_stages``: its ``stages(settings)`` builds the ``streams.engine.Stage``
objects, Sans-I/O (records in, ``Outbox`` out; no app, no broker), which is what unit
tests and ``bench/bench_stage_cpu.py`` drive; ``register`` hosts them in a Faust
worker (``host_stage``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faust

from ioc.config import Settings

if TYPE_CHECKING:
    from .engine import Stage

__all__ = ["AgentSpec"]


@dataclass(frozen=True)
class AgentSpec:
    name: str
    register: Callable[[faust.App, Settings], None]
    description: str = ""
    stages: Callable[[Settings], list[Stage]] | None = None

    @classmethod
    def of_stages(cls, name: str, build: Callable[[Settings], list[Stage]],
                  description: str = "") -> AgentSpec:
        """An agent made of batch stages: ``build(settings)`` makes them (each call new
        ones, with their own state); ``register`` hosts them in the worker."""
        def register(app: faust.App, settings: Settings) -> None:
            from .engine import host_stage

            for stage in build(settings):
                host_stage(app, settings, stage)

        return cls(name, register, description, build)

    def make_stages(self, settings: Settings) -> list[Stage]:
        """This agent's batch stages, new, unhosted (``of_stages`` agents only).

        Raises:
            TypeError: the agent is not made of batch stages.
        """
        if self.stages is None:
            raise TypeError(f"agent {self.name!r} is not made of batch stages")
        return self.stages(settings)
