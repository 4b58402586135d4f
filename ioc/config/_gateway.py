"""Settings of the HTTP gateway."""

from __future__ import annotations

from pydantic import Field

from ._base import Section

__all__ = ["GatewaySettings"]


class GatewaySettings(Section):
    """The HTTP gateway for systems that cannot speak Kafka."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8080, ge=1, le=65535)
