"""Base model for every settings section: frozen, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A frozen settings node; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
