"""The gateway's listener: aiohttp behind a guard that times headers and bounds connections.

aiohttp has no header read timeout of its own (its keep-alive timer only closes a
connection that is idle between requests), so a client sending its headers at 1 byte/s
would hold a connection for as long as it likes. ``_Connection`` is a thin
``asyncio.Protocol`` around aiohttp's ``RequestHandler``; it passes every call through and
adds two rules:

- **header timeout**: from the moment a connection is accepted, and from the first byte
  after a request was handled, the request line and headers must have arrived within
  ``gateway.header_timeout_s``; else it writes ``408`` and closes (``header_timeouts``).
  The body has its own timeout in the handler (``gateway.body_timeout_s``).
- **connection bound**: with ``gateway.max_connections`` connections open, a new one is
  closed at once (reset, nothing read or written; ``connections_refused``). Refusing
  costs nothing per connection, which is what matters when the bound is hit by a flood;
  a client that is refused retries like after any reset (resending is safe).

The guard learns that a request's headers are complete from the app's middleware
(``request_started``), not by parsing HTTP itself.

It also closes a gap of aiohttp's (3.9-3.14): when the body of a request that is already
being handled fails to parse in a *later* ``data_received`` (broken chunked framing, a
``Content-Encoding`` that does not decode), aiohttp queues the error as a new message but
never fails the in-flight request's payload, so the handler waits for a body that cannot
come and answers 408 at ``gateway.body_timeout_s`` instead of 400. Whether headers and
body arrive in one read or two is timing, so the answer was 400 or 408 by chance. The
guard sees the queued error and sets it on the payload; the handler answers 400 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import MutableMapping
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import Settings
from ._app import GatewayMetrics, Produce, create_gateway_app, gateway_state

__all__ = ["GatewayServer", "serve"]

log = logging.getLogger(__name__)

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


def _timeout_response(header_timeout_s: float) -> bytes:
    body = msgspec.json.encode({"error": "header_timeout", "message": (
        f"the request headers did not arrive within {header_timeout_s:g} s "
        f"(gateway.header_timeout_s)")})
    return _TIMEOUT_408 % (len(body), body)


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol plus the header timer and the bound."""

    def __init__(self, guard: _Guard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._refused = False
        self._payload: Any = None  # the in-flight request's body stream

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        g = self.guard
        if g.metrics.connections_open >= g.max_connections:
            g.metrics.connections_refused += 1
            self._refused = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport = transport  # type: ignore[assignment]
        g.metrics.connections_open += 1
        g.table[transport] = self
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_request and self._timer is None:
            self._arm()  # the first byte of a further request on a kept-alive connection
        self.inner.data_received(data)
        if self._in_request and self._payload is not None:
            self._fail_payload_on_parse_error()

    def eof_received(self) -> bool | None:
        return None if self._refused else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        self.guard.metrics.connections_open -= 1
        self.guard.table.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # told by the app's middleware -------------------------------------------------
    def request_started(self, payload: Any = None) -> None:
        self._in_request = True
        self._payload = payload
        self._disarm()

    def request_finished(self) -> None:
        self._in_request = False
        self._payload = None

    def _fail_payload_on_parse_error(self) -> None:
        """aiohttp queued a parse error (``_ErrInfo``) behind the request being handled:
        fail that request's body with it (see the module docstring)."""
        queued = getattr(self.inner, "_messages", None)
        if not queued:
            return
        msg = queued[-1][0]
        exc = getattr(msg, "exc", None)
        if (isinstance(exc, HttpProcessingError) and type(msg).__name__ == "_ErrInfo"
                and self._payload.exception() is None and not self._payload.is_eof()):
            self._payload.set_exception(exc)

    # the timer ----------------------------------------------------------------------
    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        t = self.transport
        if t is None or t.is_closing() or self._in_request:
            return
        self.guard.metrics.header_timeouts += 1
        if t.get_write_buffer_size() == 0:  # not in the middle of a response
            t.write(self.guard.timeout_response)
        t.close()


class _HttpErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger: a malformed request (bad framing, an encoding that does
    not decode, ...) is the client's error, yet aiohttp logs each one with a traceback.
    Here each is counted (``bad_http``) and at most one line per ``every_s`` is written,
    without the traceback, saying how many were held back."""

    def __init__(self, metrics: GatewayMetrics, every_s: float = 10.0) -> None:
        super().__init__(logging.getLogger("ioc.gateway.http"), {})
        self.metrics = metrics
        self.every_s = every_s
        self._last = -every_s
        self._held = 0

    def log(self, level: int, msg: object, *args: object, **kw: Any) -> None:
        if level < logging.ERROR:
            super().log(level, msg, *args, **kw)
            return
        self.metrics.bad_http += 1
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._held += 1
            return
        exc = kw.pop("exc_info", None)
        err = exc if isinstance(exc, BaseException) else None
        why = f": {type(err).__name__}: {str(err)[:200]!r}" if err is not None else ""
        held, self._held, self._last = self._held, 0, now
        more = f" ({held} more since the last such line)" if held else ""
        # The client's bytes (in ``why``) go in as arguments, never into the format
        # string: a request line holding ``%s`` made the record unformattable.
        super().log(logging.WARNING, f"{msg}%s%s", *args, why, more, **kw)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


class _Guard:
    """What every connection shares: limits, the counters, the transport table."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics,
                 table: dict[Any, Any]) -> None:
        g = settings.gateway
        self.header_timeout_s = g.header_timeout_s
        self.max_connections = g.max_connections
        self.metrics = metrics
        self.table = table
        self.timeout_response = _timeout_response(g.header_timeout_s)


class GatewayServer:
    """The gateway app listening on ``host:port`` behind the connection guard.

    ``async with GatewayServer(settings, port=0) as srv: srv.port`` binds (port 0: any
    free port) and stops the listener, the open connections and the producer on exit.

    Args:
        produce: see ``create_gateway_app`` (unit tests only).
    """

    def __init__(self, settings: Settings, *, host: str | None = None,
                 port: int | None = None, produce: Produce | None = None,
                 stats_interval_s: float = 60.0) -> None:
        self.settings = settings
        self.host = host or settings.gateway.host
        self.port = settings.gateway.port if port is None else port
        self.app = create_gateway_app(settings, produce=produce)
        self.metrics = gateway_state(self.app).metrics
        self.stats_interval_s = stats_interval_s
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._stats: asyncio.Task[None] | None = None

    async def start(self) -> None:
        g = self.settings.gateway
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               keepalive_timeout=g.keepalive_timeout_s,
                               logger=_HttpErrorLog(self.metrics))
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        guard = _Guard(self.settings, self.metrics, gateway_state(self.app).connections)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(guard, server()), self.host, self.port,
            backlog=min(g.max_connections, 4096))
        self.port = self._server.sockets[0].getsockname()[1]
        self._stats = asyncio.create_task(self._log_stats())

    async def close(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _log_stats(self) -> None:
        """A stats line when the counters moved: INFO, or WARNING when connections were
        refused or a bug of ours was counted since the last line."""
        last: dict[str, int] = msgspec.to_builtins(self.metrics)
        while True:
            await asyncio.sleep(self.stats_interval_s)
            now = msgspec.to_builtins(self.metrics)
            if now != last:
                alarming = any(now[k] > last[k] for k in (
                    "connections_refused", "internal_errors", "item_errors"))
                log.log(logging.WARNING if alarming else logging.INFO, "gateway stats: %s", now)
                last = now


async def serve(settings: Settings, *, host: str | None = None,
                port: int | None = None, metrics_port: int | None = None) -> None:
    """Run the gateway until SIGINT or SIGTERM, with its /metrics (``metrics.gateway``,
    or ``metrics_port``: see ``ioc.metrics.start_metrics``).

    Raises:
        ConfigError: the metrics port cannot be bound.
    """
    from ..metrics import start_metrics
    from ..metrics.gateway import GatewayCollector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with GatewayServer(settings, host=host, port=port) as srv:
        endpoint = start_metrics(settings, "gateway", [GatewayCollector(gateway_state(srv.app))],
                                 port=metrics_port)
        try:
            await stop.wait()
        finally:
            if endpoint is not None:
                endpoint.close()
