"""The probe agent: echoes ``<ns>.system.probe`` to ``<ns>.system.probe.reply``.

``ioc health`` and the foundation tests use it to prove, end to end, that a worker
consumes from and produces to the real broker.
"""

from __future__ import annotations

import os
import socket
import time

import faust
import orjson

from ioc.config import Settings
from ioc.topics import topic_name

from .agent_spec import AgentSpec

__all__ = ["PROBE", "probe_reply"]


def probe_reply(value: bytes | None, worker_id: str, now: float) -> bytes:
    """The reply to one probe record: its JSON object with ``worker`` and ``echoed_at``
    added; anything else (not JSON, not an object, a tombstone) is echoed as
    ``{"raw": <text>}``. Raises nothing, whatever the bytes."""
    try:
        body = orjson.loads(value) if value is not None else None
    except (orjson.JSONDecodeError, TypeError):
        body = None
    if not isinstance(body, dict):
        raw = value if isinstance(value, bytes) else b""
        body = {"raw": raw.decode("utf-8", "replace")[:10_000]}
    body["worker"] = worker_id
    body["echoed_at"] = now
    return orjson.dumps(body)


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    source = app.topic(topic_name(ns, "system.probe"), value_serializer="raw", key_serializer="raw")
    replies = app.topic(topic_name(ns, "system.probe.reply"), value_serializer="raw", key_serializer="raw")
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    @app.agent(source, name=f"{ns}.probe")
    async def probe(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await replies.send(key=event.key, value=probe_reply(event.value, worker_id,
                                                                time.time()))


PROBE = AgentSpec("probe", _register, "echo system.probe to system.probe.reply")
