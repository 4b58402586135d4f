"""Serve a service's registry on ``http://<metrics.host>:<port>/metrics`` (a daemon thread)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ._registry import SERVICES, service_registry

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["MetricsEndpoint", "start_metrics"]

log = logging.getLogger("ioc.metrics")


class _Handler(WSGIRequestHandler):
    """The library's exposition handler, with a read timeout: a client that does not send
    its request within ``timeout`` seconds is dropped (its thread does not wait forever)."""

    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        """No access log (one line per scrape)."""


class _Server4(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def _serve(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, threading.Thread]:
    """``prometheus_client.start_http_server`` with a read timeout per connection."""
    server = _Server6 if ":" in host else _Server4
    httpd = make_server(host, port, make_wsgi_app(registry), server, handler_class=_Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread


class MetricsEndpoint:
    """A running ``/metrics`` listener; ``close()`` stops it (and collectors with a
    ``close`` method, such as ``ConsumerLag``, which ``start_metrics`` started)."""

    def __init__(self, httpd: Any, thread: threading.Thread, host: str, service: str,
                 collectors: list[Collector]) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = host
        self.service = service
        self.port: int = int(httpd.server_port)
        self._collectors = collectors

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        for c in self._collectors:
            close = getattr(c, "close", None)
            if close is not None:
                close()
        self._httpd.shutdown()
        self._httpd.server_close()


def start_metrics(settings: Settings, service: str, collectors: Iterable[Collector] = (), *,
                  port: int | None = None, announce: bool = True) -> MetricsEndpoint | None:
    """Serve ``collectors`` (plus process, platform and build info) for ``service``.

    Args:
        service: one of ``SERVICES``; ``metrics.<service>`` is its port.
        port: the command's ``--metrics-port``; it overrides the settings (also
            ``metrics.enabled: false`` and a null port). 0: any free port.
        announce: print ``metrics on http://HOST:PORT/metrics`` to stderr (and log it).

    Returns None when metrics are off for this service.

    Raises:
        ConfigError: the port is taken or cannot be bound (naming ``metrics.<service>``).
    """
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}, got {service!r}")
    m = settings.metrics
    if port is None:
        if not m.enabled:
            return None
        port = getattr(m, service)
        if port is None:
            return None
    cs = list(collectors)
    registry = service_registry(service, settings.namespace, cs)
    try:
        httpd, thread = _serve(registry, m.host, port)
    except OSError as exc:
        why = ("the port is in use (another process serves it; pick another, 0 for any free "
               "port, or null to switch it off)" if exc.errno == errno.EADDRINUSE
               else exc.strerror or str(exc))
        raise ConfigError([(f"metrics.{service}", f"cannot serve metrics on "
                                                  f"{m.host}:{port}: {why}")]) from exc
    ep = MetricsEndpoint(httpd, thread, m.host, service, cs)
    for c in cs:
        start = getattr(c, "start", None)
        if start is not None:
            start()
    if announce:
        print(f"metrics on {ep.url}", file=sys.stderr, flush=True)
    log.info("%s: metrics on %s", service, ep.url)
    return ep
