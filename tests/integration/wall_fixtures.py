"""Helpers for wall tests: a real WallServer on port 0 in a thread, tile producers, clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from kafka import KafkaProducer

from ioc.config import Settings
from ioc.config._wall import ScreenLayout, TilePlacement, WallSettings
from ioc.kafka import kafka_python_kwargs
from ioc.tiles import Tile, encode_tile
from ioc.topics import spec
from ioc.wall.auth import TokenSigner
from ioc.wall.protocol import parse_image_frame
from ioc.wall.server import WallServer

__all__ = ["KEY", "ServerThread", "TileProducer", "layout_of", "recv_until", "wall_settings"]

KEY = b"test-wall-key-0123456789abcdef"


def layout_of(ids: list[str], *, columns: int = 4, interval: float = 5.0) -> ScreenLayout:
    """A grid holding ``ids`` in reading order."""
    rows = max(1, -(-len(ids) // columns))
    return ScreenLayout(title="test", columns=columns, rows=rows, tiles=[
        TilePlacement(tile=t, col=i % columns + 1, row=i // columns + 1, title=t,
                      expected_interval_s=interval) for i, t in enumerate(ids)])


def wall_settings(base: Settings, screens: dict[str, ScreenLayout], **wall: Any) -> Settings:
    w = WallSettings.model_validate({"port": 0, "secret": KEY.decode(), "screens": screens,
                                     "auth_timeout_s": 3, "heartbeat_s": 5, **wall})
    return base.model_copy(update={"wall": w})


class ServerThread:
    """A WallServer running in its own event loop thread; stop() it.

    ``kafka=False``: no tile source; feed ``server.store`` through :meth:`call`.
    """

    def __init__(self, settings: Settings, *, ready_timeout: float = 30, kafka: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(lambda: WallServer(settings, signer=TokenSigner(KEY), kafka=kafka))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        deadline = time.monotonic() + ready_timeout
        while not self.call(self.server.ready.is_set):
            if time.monotonic() > deadline:
                raise AssertionError(f"wall server not ready after {ready_timeout}s: "
                                     f"{self.call(self.server.health)}")
            time.sleep(0.05)
        self.port = self.server.port
        self.url = f"ws://127.0.0.1:{self.port}{settings.wall.ws_path}"
        self.signer = TokenSigner(KEY)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def token(self, *screens: str, ttl: float = 600) -> str:
        return self.signer.issue(list(screens), ttl)

    def operator_token(self, name: str, *screens: str, ttl: float = 600) -> str:
        return self.signer.issue(list(screens), ttl, subject=name, role="operator")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class TileProducer:
    """Produces tiles to the namespace's tiles topic (kafka-python)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = spec("wall.tiles").name(settings.namespace)
        self.p = KafkaProducer(**kafka_python_kwargs(settings.kafka), linger_ms=0,
                               max_request_size=4 * 1024 * 1024)

    def send(self, tile_id: str, version: int, payload: dict[str, Any] | None = None, *,
             kind: str = "kpi", image: bytes | None = None, t: float | None = None,
             flush: bool = True) -> Tile:
        now = time.time()
        tile = Tile(tile_id, kind, version, now if t is None else t, payload or {"value": version},
                    image, produced_at=now)
        self.p.send(self.topic, key=tile_id.encode(), value=encode_tile(tile))
        if flush:
            self.p.flush()
        return tile

    def tombstone(self, tile_id: str) -> None:
        self.p.send(self.topic, key=tile_id.encode(), value=None)
        self.p.flush()

    def close(self) -> None:
        self.p.close()


def recv_until(ws: Any, pred: Callable[[Any], bool], timeout: float = 5) -> list[Any]:
    """Receive decoded messages (dict for JSON, (id, version, bytes) for images) until pred."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"expected a matching message within {timeout}s, got {out[-5:]!r}")
        try:
            raw = ws.recv(timeout=left)
        except TimeoutError:
            continue
        msg = parse_image_frame(raw) if isinstance(raw, bytes) else orjson.loads(raw)
        out.append(msg)
        if pred(msg):
            return out
