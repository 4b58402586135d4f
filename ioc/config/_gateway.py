"""Settings of the HTTP gateway."""

from __future__ import annotations

from pydantic import Field

from ._base import Section

__all__ = ["GatewaySettings", "PublisherSettings"]


class PublisherSettings(Section):
    """One publisher allowed to use the gateway (``ioc gateway key`` prints this entry)."""

    key_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex SHA-256 of the publisher's API key (the key itself is never stored)",
    )
    sources: list[str] = Field(
        min_length=1,
        description="event sources this publisher may publish for; '*' allows any",
    )


class GatewaySettings(Section):
    """The HTTP gateway for systems that cannot speak Kafka."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                description="larger request bodies get 413")
    max_batch_events: int = Field(1000, ge=1, le=10_000,
                                  description="more events in one request get 413")
    ack_timeout_s: float = Field(10.0, gt=0, le=120,
                                 description="wait for broker acknowledgements, then 503")
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After sent with a 503")
    header_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="a request's line and headers must arrive within this many seconds of "
                    "the connection opening (or of its first byte after a previous request); "
                    "else 408 and the connection is closed (counted header_timeouts)")
    body_timeout_s: float = Field(
        30.0, gt=0, le=300,
        description="the whole body must arrive within this many seconds of the headers; "
                    "else 408 body_timeout and the connection is closed (body_timeouts)")
    keepalive_timeout_s: float = Field(
        15.0, gt=0, le=300,
        description="an idle keep-alive connection is closed after this many seconds")
    max_connections: int = Field(
        1000, ge=1, le=100_000,
        description="open client connections at most; a connection beyond it is closed at "
                    "once, before anything is read (counted connections_refused)")
    publishers: dict[str, PublisherSettings] = Field(
        default_factory=dict,
        description="publisher id -> hashed key and allowed sources; empty: nobody may publish",
    )
