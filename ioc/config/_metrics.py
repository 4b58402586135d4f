"""Settings of the Prometheus metrics endpoints (one per long-running service)."""

from __future__ import annotations

from pydantic import Field

from ._base import Section

__all__ = ["MetricsSettings"]

_PORT = "port of this service's /metrics; 0: any free port (logged); null: off for it"


class MetricsSettings(Section):
    """Where each service serves ``/metrics`` (docs/metrics.md lists what it exports)."""

    enabled: bool = Field(True, description="false: no service serves metrics")
    host: str = Field("127.0.0.1", description="bind address of every metrics endpoint; "
                                               "beyond loopback only on purpose")
    worker: int | None = Field(9401, ge=0, le=65535, description=_PORT)
    sink: int | None = Field(9402, ge=0, le=65535, description=_PORT)
    gateway: int | None = Field(9403, ge=0, le=65535, description=_PORT)
    wall: int | None = Field(9404, ge=0, le=65535, description=_PORT)
    camera: int | None = Field(9405, ge=0, le=65535, description=_PORT)
    feeds: int | None = Field(9406, ge=0, le=65535, description=_PORT)
