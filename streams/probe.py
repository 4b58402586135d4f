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

__all__ = ["PROBE"]


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    source = app.topic(topic_name(ns, "system.probe"), value_serializer="raw", key_serializer="raw")
    replies = app.topic(topic_name(ns, "system.probe.reply"), value_serializer="raw", key_serializer="raw")
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    @app.agent(source, name=f"{ns}.probe")
    async def probe(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            try:
                body = orjson.loads(event.value)
            except orjson.JSONDecodeError:
                body = {"raw": event.value.decode("utf-8", "replace")}
            body["worker"] = worker_id
            body["echoed_at"] = time.time()
            await replies.send(key=event.key, value=orjson.dumps(body))


PROBE = AgentSpec("probe", _register, "echo system.probe to system.probe.reply")
