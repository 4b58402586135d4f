"""The wall server: websockets/asyncio adapter around the protocol, store and queues.

One event loop owns everything: the Kafka tile source writes into the :class:`TileStore`,
the store offers each new version to the latest-wins queue of every client showing that
tile, and one sender task per client drains its queue into its socket. A slow client
only makes its own queue replace pending versions (counted as drops); a client whose
socket accepts nothing for ``stall_timeout_s`` is closed with 4029. The same port
serves the ``wall_client`` files and ``/healthz`` through websockets' ``process_request``.

Protocol 2 (operators): the :class:`~.desk.OperatorDesk` holds alerts (from the alert
tiles), their workflow and each screen's preset and pop-ups; requests are authorised
there, stored through the :class:`~.action_log.ActionLog` and applied when read back,
then the changes go to the protocol-2 clients (``_publish_changes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import mimetypes
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..config import Settings
from ..metrics.hist import SIZE_BUCKETS_BYTES, Histogram
from ._logs import LogThrottle
from .action_log import ActionLog, KafkaActionLog, MemoryActionLog
from .auth import TokenClaims, TokenSigner, load_or_create_secret
from .desk import Changes, OperatorDesk
from .exceptions import CloseCode, WallError, WallProtocolError
from .limits import RequestBucket
from .presets import ScreenView
from .protocol import (
    EncodedTile,
    Rejected,
    build_snapshot,
    encode_message,
    layout_message,
    parse_client_message,
    parse_hello,
    parse_request,
    result_message,
)
from .queues import LatestWinsQueue, QueueFull
from .state import TileStore

__all__ = ["ClientConn", "WallServer", "static_root"]

log = logging.getLogger(__name__)

_Out = tuple[bytes, bytes | None]  # (JSON text frame, optional binary frame)
_STATIC_TYPES = {".html", ".js", ".css", ".png", ".svg", ".ico", ".json"}
_CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'")


def static_root() -> Path:
    """The directory of the browser client files."""
    import wall_client

    return Path(wall_client.__file__).parent


@dataclass(eq=False)
class ClientConn:
    """One connected, authenticated screen."""

    ws: ServerConnection
    screen: str
    subject: str
    queue: LatestWinsQueue[_Out]
    connected_at: float = field(default_factory=time.monotonic)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    blocked_since: float | None = None  # monotonic start of a send that has not returned
    bytes_sent: int = 0
    closing: tuple[int, str] | None = None

    high_water: int = 2**16
    direct: bool = False  # sender idle, queue empty: tiles may be written without the queue
    protocol: int = 1
    claims: TokenClaims | None = None
    ids: frozenset[str] = frozenset()  # tiles subscribed: the shown layout plus pop-up tiles
    bucket: RequestBucket | None = None
    results: int = 0  # result messages queued so far (their queue keys cycle)

    def enqueue(self, key: str, item: _Out) -> None:
        """Latest-wins: park ``item`` for the sender task (replacing a pending one)."""
        self.direct = False
        self.queue.put(key, item)
        self.wakeup.set()

    def offer(self, enc: EncodedTile | None, tile_id: str) -> None:
        """Send or queue the newest version (or a removal) of ``tile_id`` to this client."""
        if enc is None:
            self.enqueue(tile_id, (encode_message({"type": "remove", "id": tile_id}), None))
        elif self.direct and self.ws.transport.get_write_buffer_size() <= self.high_water:
            broadcast((self.ws,), enc.text, text=True)
            if enc.frame is not None:
                broadcast((self.ws,), enc.frame)
            self.queue.delivered += 1
            self.bytes_sent += len(enc.text) + (len(enc.frame) if enc.frame is not None else 0)
        else:
            self.enqueue(tile_id, (enc.text, enc.frame))

    def control(self, key: Any, msg: dict[str, Any]) -> bool:
        """Queue a control message (ping/pong/v2) ahead of tiles; a newer one replaces it.

        Returns True when it replaced a pending one (for ping/pong and states: fine;
        for a result: the client is not reading its answers). Raises QueueFull.
        """
        self.direct = False
        replaced = self.queue.put(("ctl", key), (encode_message(msg), None), urgent=True)
        self.wakeup.set()
        return replaced


class WallServer:
    """Serve screens of ``settings.wall`` from ``store`` (fed by Kafka unless told otherwise).

    Args:
        settings: the whole settings tree (wall section and Kafka/namespace for the source).
        store: the tile store; a new one by default.
        kafka: read the tiles topic; False when the caller feeds ``store`` itself (bench).
        signer: token signer; by default keyed from ``load_or_create_secret``.
    """

    def __init__(self, settings: Settings, *, store: TileStore | None = None, kafka: bool = True,
                 signer: TokenSigner | None = None) -> None:
        self.settings = settings
        self.cfg = settings.wall
        self.store = store if store is not None else TileStore()
        self.signer = signer or TokenSigner(load_or_create_secret(self.cfg))
        self.ready = asyncio.Event()
        self.clients: set[ClientConn] = set()
        self.counters: Counter[str] = Counter()
        self.closed_drops = 0
        # for /metrics (ioc.metrics.wall): deliveries and drops of closed clients by
        # screen, seconds of each fan-out, bytes of each snapshot
        self.closed_by_screen: Counter[tuple[str, str]] = Counter()
        self.fanout_seconds = Histogram()
        self.snapshot_bytes = Histogram(SIZE_BUCKETS_BYTES)
        self._kafka = kafka
        self._source_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closers: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._static = self._load_static(static_root())
        self._by_tile: dict[str, set[ClientConn]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self.source: Any = None
        self.started_at = time.time()
        self._log = LogThrottle(log, every_s=self.cfg.log_every_s)
        self.server_id = f"{socket.gethostname()}:{id(self):x}"
        self.desk = OperatorDesk(self.cfg, self.store.ids())
        self.store.watch("alerts:", self._on_alert_tile)
        self.actions: ActionLog = (KafkaActionLog(settings, self._on_action, on_ready=self._maybe_ready)
                                   if kafka else MemoryActionLog(self._on_action))
        self._tiles_ready = not kafka
        self._overlays = camera_overlays(settings)  # every camera: pop-ups come from anywhere
        self._actions_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, start the tile source and the heartbeat/watchdog task."""
        cfg = self.cfg
        if self._kafka:
            from .kafka_source import KafkaTileSource

            self.source = KafkaTileSource(self.settings, self.store, on_ready=self._tiles_rebuilt)
            self._source_task = asyncio.create_task(self.source.run(), name="wall-kafka-source")
            self._source_task.add_done_callback(self._source_done)
            self._actions_task = asyncio.create_task(self.actions.run(), name="wall-actions")
            self._actions_task.add_done_callback(self._actions_done)
        else:
            self.ready.set()
        try:
            self._server = await self._listen()
        except BaseException:
            await self.stop()  # the Kafka tasks started above must not outlive a failed bind
            raise
        self._tasks.append(asyncio.create_task(self._heartbeat_and_watchdog(), name="wall-watchdog"))
        log.info("wall: serving %d screen(s) on http://%s:%d/ (websocket %s)",
                 len(cfg.screens), cfg.host, self.port, cfg.ws_path)

    async def _listen(self) -> Server:
        cfg = self.cfg
        return await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            compression="deflate" if cfg.compression == "deflate" else None,
            max_size=cfg.max_message_bytes,
            max_queue=16,
            write_limit=cfg.write_buffer_bytes,
            ping_interval=cfg.heartbeat_s,
            ping_timeout=cfg.heartbeat_timeout_s,
            close_timeout=3,
            open_timeout=cfg.auth_timeout_s,
            server_header=None,
        )

    def _tiles_rebuilt(self) -> None:
        self._tiles_ready = True
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        """Ready once the tiles and the actions are both rebuilt."""
        if self._tiles_ready and self.actions.ready.is_set():
            self.ready.set()

    def _actions_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("wall: actions log stopped: %s", task.exception())
            self.counters["actions_failed"] += 1

    def _source_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("wall: tile source stopped: %s", task.exception())
            self.counters["source_failed"] += 1

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close every client with 1001, stop the source and the listener."""
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            self._server.close(close_connections=False)
            await asyncio.gather(*(self._close(c, CloseCode.GOING_AWAY, "server shutting down")
                                   for c in list(self.clients)), return_exceptions=True)
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for bg in (self._source_task, self._actions_task):
            if bg is not None:
                bg.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await bg

    async def serve_forever(self) -> None:
        """Start, serve until cancelled, stop."""
        await self.start()
        try:
            await self.serve_forever_started()
        finally:
            await self.stop()

    async def serve_forever_started(self) -> None:
        """Wait while serving; re-raises the error of the tile source or the actions log
        when either fails (``ioc wall serve`` then exits for its supervisor)."""
        bg = [t for t in (self._source_task, self._actions_task) if t is not None]
        if not bg:
            await asyncio.Future()
            return
        done, _ = await asyncio.wait(bg, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()

    # -- HTTP: static files, health, origin check ---------------------------------------

    @staticmethod
    def _load_static(root: Path) -> dict[str, tuple[bytes, str]]:
        files: dict[str, tuple[bytes, str]] = {}
        for p in root.iterdir():
            if p.is_file() and p.suffix in _STATIC_TYPES:
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                if p.suffix == ".js":
                    ctype = "text/javascript"
                files["/" + p.name] = (p.read_bytes(), ctype + ("; charset=utf-8" if ctype.startswith("text") else ""))
        if "/index.html" in files:
            files["/"] = files["/index.html"]
        return files

    @staticmethod
    def _response(status: int, body: bytes, ctype: str, **extra: str) -> Response:
        st = http.HTTPStatus(status)
        headers = Headers([
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", ctype),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            *extra.items(),
        ])
        return Response(st.value, st.phrase, headers, body)

    def _origin_ok(self, request: Request) -> tuple[bool, str]:
        origin = request.headers.get("Origin")
        if origin is None:
            return self.cfg.allow_missing_origin, "no Origin header"
        if origin in self.cfg.allowed_origins:
            return True, origin
        host = request.headers.get("Host", "")
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # e.g. "http://[": not a URL at all
            return False, origin
        if netloc == host and host:
            return True, origin  # the page this server served
        return False, origin

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == self.cfg.ws_path:
            ok, origin = self._origin_ok(request)
            if not ok:
                self.counters["origin_refused"] += 1
                self._log.log(logging.WARNING, "origin", "wall: refused websocket from origin %r",
                              origin[:200])
                return self._response(403, f"origin {origin[:200]!r} is not allowed\n".encode(),
                                      "text/plain; charset=utf-8")
            return None
        if path == "/healthz":
            health = self.health()
            return self._response(200 if health["status"] == "ok" else 503,
                                  orjson.dumps(health, option=orjson.OPT_INDENT_2),
                                  "application/json")
        static = self._static.get(path)
        if static is None:
            return self._response(404, b"not found\n", "text/plain; charset=utf-8")
        body, ctype = static
        extra = {"Content-Security-Policy": _CSP} if ctype.startswith("text/html") else {}
        return self._response(200, body, ctype, **extra)

    def health(self) -> dict[str, Any]:
        """Readiness and counters, as served on ``/healthz``."""
        per_screen = Counter(c.screen for c in self.clients)
        failed = self.counters["source_failed"] > 0 or self.counters["actions_failed"] > 0
        return {
            "status": "failed" if failed else "ok" if self.ready.is_set() else "rebuilding",
            "namespace": self.settings.namespace,
            "tiles": len(self.store),
            "clients": len(self.clients),
            "screens": dict(per_screen),
            "drops": self.closed_drops + sum(c.queue.drops for c in self.clients),
            "clients_with_drops": sum(1 for c in self.clients if c.queue.drops),
            "delivered": self.counters["delivered"] + sum(c.queue.delivered for c in self.clients),
            "counters": {k: v for k, v in self.counters.items() if k != "delivered"},
            "store": vars(self.store.stats),
            "operators": {
                "alerts_known": len(self.desk.alerts),
                "alert_states": len(self.desk.book.states),
                "alert_states_evicted": self.desk.book.evicted,
                "actions_folded": self.desk.folded,
                "actions_duplicate": self.desk.book.duplicates,
                "actions_undecodable": getattr(self.actions, "undecodable", 0),
                "actions_fold_errors": getattr(self.actions, "fold_errors", 0),
                "presets": {k: v.preset for k, v in self.desk.views.items() if v.preset},
                "popups": sum(len(v.popups) for v in self.desk.views.values()),
            },
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # -- websocket clients -----------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection, whatever it sends: a close code for the client, never a crash.

        ``WallError`` (bad input) closes with its code; any other exception is a bug in
        this server, counted as ``handler_errors``, logged with its traceback (throttled)
        and answered with 1011, and only this connection ends.
        """
        try:
            await self._serve_client(ws)
        except ConnectionClosed:
            return  # the peer left mid-handshake or mid-close: nothing to report
        except Exception:
            self.counters["handler_errors"] += 1
            self._log.log(logging.ERROR, "handler_error",
                          "wall: internal error serving %s; closing it with 1011",
                          ws.remote_address, exc_info=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(CloseCode.INTERNAL_ERROR, "internal error"), 2)
            ws.transport.abort()

    async def _serve_client(self, ws: ServerConnection) -> None:
        cfg = self.cfg
        if len(self.clients) >= cfg.max_clients:
            self.counters["refused_full"] += 1
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"server full: {cfg.max_clients} clients")
            return
        try:
            raw = await asyncio.wait_for(ws.recv(), cfg.auth_timeout_s)
        except TimeoutError:
            self.counters["auth_timeout"] += 1
            await ws.close(CloseCode.AUTH_TIMEOUT, f"expected hello within {cfg.auth_timeout_s:g} s")
            return
        except ConnectionClosed:
            return
        try:
            hello = parse_hello(parse_client_message(raw))
            layout = cfg.screens.get(hello.screen)
            if layout is None:
                raise WallProtocolError(CloseCode.UNKNOWN_SCREEN,
                                        f"unknown screen {hello.screen[:40]!r}; known: {sorted(cfg.screens)}")
            claims = self.signer.verify(hello.token, hello.screen)
        except WallError as exc:
            self.counters[f"refused_{exc.code}"] += 1
            self._log.log(logging.INFO, f"refused_{exc.code}", "wall: refused %s: %s",
                          ws.remote_address, exc.reason)
            await ws.close(exc.code, exc.reason)
            return
        await self.ready.wait()
        if cfg.socket_send_buffer_bytes:
            sock = ws.transport.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_send_buffer_bytes)
            except OSError:  # the peer left while we were busy; its socket is gone
                return
        v2 = hello.protocol >= 2
        view = self.desk.views.get(hello.screen, ScreenView()) if v2 else ScreenView()
        shown = layout.preset_layout(view.preset)
        ids = shown.tile_ids() | view.popup_tiles()
        # v2: results, alert states, presets and pop-ups are control messages too
        max_keys = len(layout.all_tile_ids()) + 8 + (64 + _RESULT_KEYS + 16 if v2 else 0)
        client = ClientConn(ws, hello.screen, claims.subject,
                            LatestWinsQueue(max_keys=max_keys),
                            high_water=cfg.write_buffer_bytes, protocol=hello.protocol,
                            claims=claims, ids=ids,
                            bucket=RequestBucket(cfg.action_rate_per_s, cfg.action_burst))
        self.clients.add(client)
        # Subscribe before the snapshot is built (no await between): nothing is missed.
        self._register(client, ids)
        snap = build_snapshot(hello.screen, shown, self.store.select(ids), hello,
                              now=time.time(), heartbeat_s=cfg.heartbeat_s,
                              v2=self._v2_snapshot(client, view) if v2 else None)
        self.counters["snapshots_full" if snap.full else "snapshots_resume"] += 1
        self.snapshot_bytes.observe(len(snap.message) + sum(len(f) for f in snap.frames))
        log.info("wall: %s connected to %s (%s, %d tiles)", ws.remote_address, hello.screen,
                 "full snapshot" if snap.full else "resumed", snap.tile_count)
        sender: asyncio.Task[None] | None = None
        try:
            await self._send(client, snap.message, text=True)
            for frame in snap.frames:
                await self._send(client, frame, text=False)
            sender = asyncio.create_task(self._sender(client))
            await self._receiver(client)
        except ConnectionClosed:
            pass
        except WallError as exc:
            self._log.log(logging.INFO, f"closed_{exc.code}", "wall: closing %s (%s): %s",
                          ws.remote_address, client.screen, exc.reason)
            await self._close(client, exc.code, exc.reason)
        finally:
            self._unregister(client, client.ids)
            if sender is not None:
                sender.cancel()
            self.clients.discard(client)
            self.closed_drops += client.queue.drops
            self.closed_by_screen[client.screen, "delivered"] += client.queue.delivered
            self.closed_by_screen[client.screen, "drops"] += client.queue.drops
            self.counters["delivered"] += client.queue.delivered
            self.counters["disconnects"] += 1
            if client.queue.drops:
                log.info("wall: %s left %s; %d update(s) dropped (latest-wins)",
                         ws.remote_address, client.screen, client.queue.drops)

    def _register(self, client: ClientConn, ids: frozenset[str]) -> None:
        for tid in ids:
            group = self._by_tile.get(tid)
            if group is None:
                group = self._by_tile[tid] = set()
                self._unsubscribe[tid] = self.store.subscribe(frozenset({tid}), self._fanout)
            group.add(client)

    def _unregister(self, client: ClientConn, ids: frozenset[str]) -> None:
        for tid in ids:
            group = self._by_tile.get(tid)
            if group is not None:
                group.discard(client)
                if not group:
                    del self._by_tile[tid]
                    self._unsubscribe.pop(tid)()

    def _fanout(self, enc: EncodedTile | None, tile_id: str) -> None:
        """Store listener: one new version to every client showing ``tile_id``.

        Clients that keep up get it in one ``broadcast()`` call (the bytes are shared);
        the others get it in their latest-wins queue.
        """
        group = self._by_tile.get(tile_id)
        if not group:
            return
        if enc is None:
            for c in group:
                c.offer(None, tile_id)
            return
        t0 = time.perf_counter()
        ready = []
        item = (enc.text, enc.frame)
        for c in group:
            if c.direct and c.ws.transport.get_write_buffer_size() <= c.high_water:
                ready.append(c)
            else:
                c.enqueue(tile_id, item)
        if ready:
            conns = [c.ws for c in ready]
            broadcast(conns, enc.text, text=True)
            if enc.frame is not None:
                broadcast(conns, enc.frame)
            size = len(enc.text) + (len(enc.frame) if enc.frame is not None else 0)
            for c in ready:
                c.queue.delivered += 1
                c.bytes_sent += size
        self.fanout_seconds.observe(time.perf_counter() - t0)

    async def _send(self, client: ClientConn, data: bytes, *, text: bool) -> None:
        client.blocked_since = time.monotonic()
        await client.ws.send(data, text=text)
        client.blocked_since = None
        client.bytes_sent += len(data)

    async def _sender(self, client: ClientConn) -> None:
        q = client.queue
        with contextlib.suppress(ConnectionClosed):
            while True:
                if not q and client.ws.transport.get_write_buffer_size() <= client.high_water:
                    client.direct = True
                await client.wakeup.wait()
                client.direct = False
                client.wakeup.clear()
                while (item := q.pop()) is not None:
                    text, frame = item
                    await self._send(client, text, text=True)
                    if frame is not None:
                        await self._send(client, frame, text=False)

    async def _receiver(self, client: ClientConn) -> None:
        cfg = self.cfg
        while True:
            try:
                raw = await asyncio.wait_for(client.ws.recv(), cfg.heartbeat_timeout_s)
            except TimeoutError:
                raise WallError(CloseCode.HEARTBEAT_TIMEOUT,
                                f"no message for {cfg.heartbeat_timeout_s:g} s; expected a ping "
                                f"every {cfg.heartbeat_s:g} s") from None
            msg = parse_client_message(raw)
            kind = msg["type"]
            if kind == "ping":
                client.control("pong", {"type": "pong", "t": msg.get("t")})
            elif kind == "hello":
                raise WallProtocolError(CloseCode.PROTOCOL, "expected ping/pong, got a second hello")
            elif kind in ("action", "preset"):
                if client.protocol < 2:
                    raise WallProtocolError(CloseCode.PROTOCOL,
                                            f"{kind} needs protocol 2 (hello.protocol: 2)")
                await self._request(client, msg)

    async def _close(self, client: ClientConn, code: int, reason: str, *,
                     timeout_s: float = 4.0) -> None:
        """Close with ``code``/``reason``; abort the socket if the handshake cannot finish
        within ``timeout_s``."""
        if client.closing is not None:
            return
        client.closing = (code, reason)
        self.counters[f"closed_{code}"] += 1
        try:
            await asyncio.wait_for(client.ws.close(code, reason), timeout_s)
        except (TimeoutError, ConnectionClosed):
            client.ws.transport.abort()

    async def _heartbeat_and_watchdog(self) -> None:
        cfg = self.cfg
        next_ping = time.monotonic() + cfg.heartbeat_s
        while True:
            await asyncio.sleep(min(1.0, cfg.stall_timeout_s / 4))
            now = time.monotonic()
            if now >= next_ping:
                next_ping = now + cfg.heartbeat_s
                msg = {"type": "ping", "t": time.time()}
                for c in self.clients:
                    c.control("ping", msg)
            for c in list(self.clients):
                if c.blocked_since is not None and now - c.blocked_since > cfg.stall_timeout_s:
                    reason = (f"stalled: nothing accepted for {now - c.blocked_since:.0f} s; "
                              f"{c.queue.drops} update(s) dropped")
                    self._log.log(logging.WARNING, "stalled", "wall: closing %s (%s): %s",
                                  c.ws.remote_address, c.screen, reason)
                    self.counters["stalled"] += 1
                    c.blocked_since = None  # do not close twice
                    # Its buffers are full: the close frame can only get through if it
                    # resumes reading soon; then the socket is aborted.
                    task = asyncio.create_task(self._close(c, CloseCode.STALLED, reason,
                                                           timeout_s=cfg.stall_close_grace_s))
                    self._closers.add(task)
                    task.add_done_callback(self._closers.discard)

    # -- protocol 2: operators, presets, pop-ups ----------------------------------------------

    def _v2_snapshot(self, client: ClientConn, view: ScreenView) -> dict[str, Any]:
        claims = client.claims
        assert claims is not None
        return {
            "protocol": 2,
            "role": claims.role,
            "operator": claims.operator,
            "alert_states": self.desk.alert_states(),
            "preset": view.preset,
            "preset_by": view.by,
            "presets": sorted(self.cfg.screens[client.screen].presets),
            "popups": [p.as_message() for p in view.popups],
            "overlays": self._overlays,
        }

    def _answer(self, client: ClientConn, msg: dict[str, Any]) -> None:
        """Queue a result; a client that leaves its answers unread is closed (1008)."""
        client.results += 1
        if self._control(client, ("result", client.results % _RESULT_KEYS), msg):
            self._close_soon(client, CloseCode.POLICY, "flooding: results not read")

    async def _request(self, client: ClientConn, msg: dict[str, Any]) -> None:
        """Authorise, rate-limit, store an action/preset request and answer it."""
        cfg = self.cfg
        assert client.bucket is not None and client.claims is not None
        if not client.bucket.take(time.monotonic()):
            self.counters["requests_rate_limited"] += 1
            if client.bucket.refused_in_a_row > cfg.action_flood_close:
                raise WallError(CloseCode.POLICY,
                                f"rate limit: more than {cfg.action_flood_close} requests "
                                f"refused in a row")
            self._answer(client, result_message(msg.get("id"), error="rate_limited",
                                                detail=f"at most {cfg.action_rate_per_s:g}/s, "
                                                       f"bursts of {cfg.action_burst}"))
            return
        req = parse_request(msg)
        out = req if isinstance(req, Rejected) else self.desk.authorise(
            client.claims, client.screen, req, now=time.time(), server=self.server_id)
        if isinstance(out, Rejected):
            self.counters[f"requests_{out.error}"] += 1
            self._answer(client, out.message())
            return
        try:
            await self.actions.publish(out)
        except (TimeoutError, Exception) as exc:  # the operator must hear it did not work
            self.counters["requests_unavailable"] += 1
            self._log.log(logging.WARNING, "action_store", "wall: storing an action failed: %s",
                          exc)
            self._answer(client, result_message(msg.get("id"), error="unavailable",
                                                detail="the action could not be stored; "
                                                       "try again"))
            return
        self.counters[f"actions_{out.action}"] += 1
        log.info("wall: %s %s %s (%s, screen %s)", out.by, out.action, out.alert,
                 out.to or out.preset or "", client.screen)
        self._answer(client, result_message(msg.get("id")))

    def _on_alert_tile(self, enc: EncodedTile | None, tile_id: str) -> None:
        self._publish_changes(self.desk.on_alert_tile(
            tile_id, None if enc is None else enc.tile.payload))

    def _on_action(self, rec: Any) -> None:
        self._publish_changes(self.desk.fold(rec))

    def _control(self, client: ClientConn, key: Any, msg: dict[str, Any]) -> bool:
        try:
            return client.control(key, msg)
        except QueueFull:
            self._close_soon(client, CloseCode.STALLED, "stalled: too many pending messages")
            return False

    def _close_soon(self, client: ClientConn, code: int, reason: str) -> None:
        task = asyncio.create_task(self._close(client, code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _publish_changes(self, ch: Changes) -> None:
        """Send what changed to the protocol-2 clients (never awaits)."""
        if not ch or not self.clients:
            return
        states = [(aid, {"type": "alert_state", "alert": aid, "state": st.as_message()})
                  for aid, st in ch.alert_states.items()]
        for c in list(self.clients):
            if c.protocol < 2 or c.closing is not None:
                continue
            for aid, msg in states:
                self._control(c, ("alert", aid), msg)
            if c.screen in ch.screens:
                old, new = ch.screens[c.screen]
                self._switch_view(c, old, new)

    def _switch_view(self, c: ClientConn, old: ScreenView, new: ScreenView) -> None:
        """Move ``c`` to ``new``: preset message, pop-up messages, tile subscriptions."""
        layout = self.cfg.screens[c.screen]
        shown = layout.preset_layout(new.preset)
        if (old.preset, old.by) != (new.preset, new.by):
            self._control(c, ("preset",), {
                "type": "preset", "screen": c.screen, "preset": new.preset, "by": new.by,
                "layout": layout_message(c.screen, shown)})
        was = {p.alert: p for p in old.popups}
        now = {p.alert: p for p in new.popups}
        for aid in was.keys() - now.keys():
            self._control(c, ("popup", aid), {"type": "popup_end", "alert": aid})
        for aid, p in now.items():
            if was.get(aid) != p:
                self._control(c, ("popup", aid), {"type": "popup", **p.as_message()})
        ids = shown.tile_ids() | new.popup_tiles()
        added, gone = ids - c.ids, c.ids - ids
        self._unregister(c, gone)
        self._register(c, added)
        c.ids = ids
        # after the messages above (control() stopped direct writes, so these queue
        # behind them): the held version of each tile the client may not have
        for tid in sorted(added if old.preset == new.preset else ids):
            enc = self.store.get(tid)
            if enc is not None:
                c.offer(enc, tid)


_RESULT_KEYS = 48  # results pending per client before it counts as not reading them


def camera_overlays(settings: Settings) -> dict[str, dict[str, Any]]:
    """Zones and counting lines (normalized 0..1) of every configured camera, by tile id."""
    out: dict[str, dict[str, Any]] = {}
    cams = settings.cameras
    for cam in cams.cameras:
        tid = f"camera:{cam.id}"
        a = cam.analytics or cams.analytics
        out[tid] = {
            "zones": [{"name": z.name, "polygon": [list(p) for p in z.polygon]} for z in a.zones],
            "lines": [{"name": ln.name, "a": list(ln.a), "b": list(ln.b),
                       "direction": ln.direction} for ln in a.lines],
        }
    return out
