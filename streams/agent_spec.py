"""``AgentSpec``: a named agent and the function that registers it on a Faust app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faust

from ioc.config import Settings

__all__ = ["AgentSpec"]


@dataclass(frozen=True)
class AgentSpec:
    name: str
    register: Callable[[faust.App, Settings], None]
    description: str = ""
