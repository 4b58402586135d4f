"""The HTTP gateway: aiohttp handlers that validate, authorise and produce to Kafka.

Why aiohttp: faust-streaming already depends on it (no second web stack), it is
asyncio-native like aiokafka, and it enforces a request body limit
(``client_max_size``) before reading the body into memory.

Endpoints (JSON in, JSON out)::

    POST /v1/events                           a JSON array of envelopes, {"events": [...]},
                                              or one envelope
    POST /ngsi-ld/v1/entityOperations/upsert  a JSON array of NGSI-LD entities
    POST /ngsi-ld/v1/entityOperations/create  (same)
    POST /ngsi-ld/v1/entities                 one NGSI-LD entity
    GET  /healthz                             200 when the broker connection is up, else 503
    GET  /ngsi-ld/v1/entities?type=KeyPerformanceIndicator
                                              scorecards as NGSI-LD entities, for reader keys
                                              (ioc.scorecard._export)

Responses list every item: ``{"index", "id", "status": "accepted"}`` or
``{"index", "id", "status": "rejected", "reason", "message", "field"}``. Status codes:
200 all accepted; 207 some accepted; 422 none valid; 403 none allowed for this
publisher; 401 no or unknown key; 400 body not JSON (``not_json``) or unreadable
(``bad_body``); 408 body not received within ``gateway.body_timeout_s``; 413 body or
batch too large; 415 a Content-Type that is not JSON; 503 + Retry-After when the broker
did not acknowledge (then accepted events are listed as ``not_acknowledged``: resending
the whole request is safe, the sink de-duplicates). Accepted events go to
``<ns>.events.raw`` as JSON-array records keyed by source.

Contract: nothing a client sends (any bytes, JSON shape, NGSI-LD shape, header) yields a
5xx. An unexpected exception while mapping or validating one item rejects that item
(reason ``invalid``); anywhere else the last-resort middleware answers 500
``internal_error``. Both are bugs of ours, counted in ``item_errors`` and
``internal_errors`` and logged (throttled) with their traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import Settings
from ..errors import AuthError, InvalidEvent
from ..events import Event, chunk_events, validate_event
from ..events._ngsi import ngsi_to_event
from ..kafka.clients import aiokafka_kwargs
from ..metrics.hist import Histogram
from ..topics import topic_name
from ._auth import Caller, KeyRing

__all__ = ["JSON_MEDIA_TYPES", "GatewayMetrics", "create_gateway_app"]

log = logging.getLogger(__name__)

_SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
_STATE: web.AppKey[_Gateway] = web.AppKey("gateway", object)  # type: ignore[arg-type]


# Content-Types taken as JSON (plus any ``application/<x>+json``); a body without a
# Content-Type is read as JSON too (legacy senders often omit it).
JSON_MEDIA_TYPES = frozenset({"application/json", "application/ld+json"})

Produce = Callable[[list[Event]], Awaitable[None]]


class GatewayMetrics(msgspec.Struct):
    """Counters of one gateway process (``GET /healthz`` and the stats log line show them).

    ``item_errors`` and ``internal_errors`` count bugs of ours (an unexpected exception);
    they must stay 0 whatever clients send. ``bad_http`` counts requests aiohttp refused
    before the app saw them (malformed HTTP: 400). ``connections_open`` is a gauge.
    """

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    unauthorized: int = 0
    too_large: int = 0
    unavailable: int = 0
    not_json: int = 0
    bad_media_type: int = 0
    body_timeouts: int = 0
    header_timeouts: int = 0
    bad_http: int = 0
    connections_open: int = 0
    connections_refused: int = 0
    item_errors: int = 0
    internal_errors: int = 0


class _Throttled:
    """Log at most one line per ``every_s`` seconds, saying how many were held back."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = -every_s
        self._held = 0

    def exception(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        log.error(msg + (f" ({held} more since the last such line)" if held else ""), *args,
                  exc_info=True)


class _BrokerDown(Exception):
    pass


class _Gateway:
    """The producer (started lazily, restarted after failures) and counters."""

    def __init__(self, settings: Settings, produce: Produce | None = None) -> None:
        self.settings = settings
        self.g = settings.gateway
        self.keys = KeyRing(self.g.publishers)
        self.topic = topic_name(settings.namespace, "events.raw")
        self.metrics = GatewayMetrics()
        # For /metrics (ioc.metrics.gateway): answers by (route, status), seconds to
        # answer by route, rejected events by reason.
        self.answers: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.rejections: Counter[str] = Counter()
        self.bugs = _Throttled()
        # transport -> its connection guard (ioc.gateway._server), told when a request
        # starts and ends so it times only the reading of request headers.
        self.connections: dict[Any, Any] = {}
        self._produce_override = produce
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0

    async def producer(self) -> Any:
        from ..kafka.aio import AIOKafkaProducer
        from ..kafka.aio import KafkaError as AIOKafkaError

        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            # Don't hammer a dead broker: one connection attempt per Retry-After period.
            if time.monotonic() - self._failed_at < self.g.retry_after_s:
                raise _BrokerDown("the broker was unreachable moments ago")
            kw = aiokafka_kwargs(self.settings.kafka)
            kw["request_timeout_ms"] = int(self.g.ack_timeout_s * 1000)
            p = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=2,
                                 max_request_size=1024 * 1024, **kw)
            try:
                await asyncio.wait_for(p.start(), self.g.ack_timeout_s)
            except (AIOKafkaError, OSError, TimeoutError) as exc:
                self._failed_at = time.monotonic()
                await _quiet_stop(p)
                raise _BrokerDown(f"{type(exc).__name__}: {exc}") from exc
            self._producer = p
            return p

    async def produce(self, events: list[Event]) -> None:
        """Send ``events`` and wait for every acknowledgement; _BrokerDown otherwise."""
        if not events:
            return
        if self._produce_override is not None:
            try:
                await self._produce_override(events)
            except Exception as exc:
                raise _BrokerDown(f"{type(exc).__name__}: {exc}") from exc
            return
        p = await self.producer()
        by_source: dict[str, list[Event]] = {}
        for e in events:
            by_source.setdefault(e.source, []).append(e)
        try:
            async with asyncio.timeout(self.g.ack_timeout_s):
                futs = [await p.send(self.topic, value=record, key=source.encode())
                        for source, evs in by_source.items()
                        for record, _ in chunk_events(evs)]
                await asyncio.gather(*futs)
        except Exception as exc:
            # The producer may be wedged on a dead connection: start afresh next time.
            self._producer = None
            self._failed_at = time.monotonic()
            await _quiet_stop(p)
            raise _BrokerDown(f"{type(exc).__name__}: {exc}") from exc

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count one answer of ``route`` (a resource of the router, or ``other``)."""
        self.answers[(route, status)] += 1
        h = self.latency.get(route)
        if h is None:
            h = self.latency[route] = Histogram()
        h.observe(seconds)

    async def close(self) -> None:
        if self._producer is not None:
            await _quiet_stop(self._producer)
            self._producer = None


async def _quiet_stop(p: Any) -> None:
    try:
        await asyncio.wait_for(p.stop(), 5)
    except Exception as exc:  # closing a broken producer: nothing more to do
        log.debug("producer stop: %s", exc)


def _key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def _error(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status,
                             headers=headers or None)


def _media_type_problem(request: web.Request) -> str | None:
    """Why the request's Content-Type is not JSON, or None (absent counts as JSON)."""
    raw = request.headers.get("Content-Type")
    if raw is None or not raw.strip():
        return None
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media not in JSON_MEDIA_TYPES and not (media.startswith("application/")
                                              and media.endswith("+json")):
        return (f"Content-Type {raw[:100]!r} is not JSON: send application/json or "
                f"application/ld+json")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8", "us-ascii"):
            return f"charset {value.strip()[:40]!r} is not UTF-8 (JSON is UTF-8)"
    return None


async def _read_json(request: web.Request, gw: _Gateway) -> Any:
    problem = _media_type_problem(request)
    if problem is not None:
        gw.metrics.bad_media_type += 1
        raise _Reply(_error(415, "unsupported_media_type", problem))
    try:
        async with asyncio.timeout(gw.g.body_timeout_s):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        gw.metrics.too_large += 1
        raise _Reply(_error(413, "body_too_large", f"request body is larger than "
                            f"{gw.g.max_body_bytes} bytes (gateway.max_body_bytes)")) from exc
    except TimeoutError as exc:
        gw.metrics.body_timeouts += 1
        resp = _error(408, "body_timeout", f"the request body did not arrive within "
                      f"{gw.g.body_timeout_s:g} s (gateway.body_timeout_s)")
        resp.force_close()
        raise _Reply(resp, close=True) from exc
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # Broken chunked framing, a Content-Encoding that does not decode, ...
        # The rest of the body cannot be read either: answer and close (no lingering).
        raise _Reply(_error(400, "bad_body", f"the request body could not be read: "
                            f"{str(exc)[:200]}"), close=True) from exc
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        gw.metrics.not_json += 1
        why = ("nested too deeply" if isinstance(exc, RecursionError) else
               "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc))
        raise _Reply(_error(400, "not_json", f"request body is not JSON: {why}")) from exc


class _Reply(Exception):
    """A finished answer; ``close``: drop the connection once it is sent."""

    def __init__(self, response: web.Response, *, close: bool = False) -> None:
        self.response = response
        self.close = close


async def _reply(request: web.Request, r: _Reply) -> web.Response:
    if r.close:
        # Send now and close at once: aiohttp would otherwise linger, reading the rest
        # of a slow body for up to its lingering_time.
        await r.response.prepare(request)
        await r.response.write_eof()
        request.protocol.force_close()
    return r.response


def _authenticate(request: web.Request, gw: _Gateway) -> Caller:
    try:
        return gw.keys.authenticate(_key_of(request))
    except AuthError as exc:
        gw.metrics.unauthorized += 1
        raise _Reply(web.json_response(
            {"error": "unauthorized", "message": str(exc)}, status=401,
            headers={"WWW-Authenticate": 'Bearer realm="ioc-gateway"'})) from exc


def _check_batch(items: list[Any], gw: _Gateway) -> None:
    if len(items) > gw.g.max_batch_events:
        gw.metrics.too_large += 1
        raise _Reply(_error(413, "batch_too_large", f"{len(items)} events in one request; "
                            f"the limit is {gw.g.max_batch_events} (gateway.max_batch_events)"))
    if not items:
        raise _Reply(_error(422, "empty_batch", "the request holds no events"))


def _rejected(i: int, item: Any, exc: InvalidEvent) -> dict[str, Any]:
    eid = item.get("id") if isinstance(item, dict) else None
    return {"index": i, "id": eid if isinstance(eid, str) else None, "status": "rejected",
            "reason": exc.reason, "message": str(exc), "field": exc.field}


async def _finish(gw: _Gateway, events: list[tuple[int, Event]],
                  results: list[dict[str, Any]]) -> web.Response:
    try:
        await gw.produce([e for _, e in events])
    except _BrokerDown as exc:
        gw.metrics.unavailable += 1
        log.warning("gateway: broker did not acknowledge %d event(s): %s", len(events), exc)
        for i, e in events:
            results.append({"index": i, "id": e.id, "status": "rejected",
                            "reason": "not_acknowledged",
                            "message": "the broker did not acknowledge this event; retry "
                                       "later (resending is safe)", "field": None})
        results.sort(key=lambda r: r["index"])
        gw.rejections.update(r["reason"] for r in results)
        return web.json_response(
            {"accepted": 0, "rejected": len(results), "error": "kafka_unavailable",
             "message": f"Kafka did not acknowledge within {gw.g.ack_timeout_s:.0f} s",
             "results": results},
            status=503, headers={"Retry-After": str(gw.g.retry_after_s)})
    for i, e in events:
        results.append({"index": i, "id": e.id, "status": "accepted"})
    results.sort(key=lambda r: r["index"])
    n_ok = len(events)
    n_bad = len(results) - n_ok
    if n_bad:
        gw.rejections.update(r["reason"] for r in results if r["status"] == "rejected")
    gw.metrics.accepted += n_ok
    gw.metrics.rejected += n_bad
    if n_bad == 0:
        status = 200
    elif n_ok:
        status = 207
    elif all(r["reason"] == "source_not_allowed" for r in results):
        status = 403
    else:
        status = 422
    return web.json_response({"accepted": n_ok, "rejected": n_bad, "results": results},
                             status=status)


def _admit(caller: Caller, i: int, item: Any, now: float) -> Event:
    """Authorise the source, then validate; InvalidEvent otherwise."""
    if isinstance(item, dict):
        if "source" not in item and caller.default_source is not None:
            item = {**item, "source": caller.default_source}
        src = item.get("source")
        if isinstance(src, str) and not caller.may_publish(src):
            raise InvalidEvent("source_not_allowed", f"source_not_allowed at source: publisher "
                               f"{caller.publisher!r} may not publish for source {src!r}",
                               field="source")
    return validate_event(item, now=now)


def _admit_all(gw: _Gateway, caller: Caller, items: list[Any],
               convert: Callable[[Any], Any] | None = None,
               ) -> tuple[list[tuple[int, Event]], list[dict[str, Any]]]:
    """Admit each item (after ``convert``, e.g. NGSI-LD to envelope): (index, event) pairs
    for the admitted ones, and a rejection result for each of the others.

    An unexpected exception rejects only its item (reason ``invalid``): it is a bug of
    ours, counted in ``item_errors`` and logged, but never the client's 500.
    """
    now = time.time()
    ok: list[tuple[int, Event]] = []
    results: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            ok.append((i, _admit(caller, i, convert(item) if convert else item, now)))
        except InvalidEvent as exc:
            results.append(_rejected(i, item, exc))
        except Exception as exc:
            gw.metrics.item_errors += 1
            gw.bugs.exception("gateway: item %d raised %s (a bug: the item is rejected as "
                              "'invalid')", i, type(exc).__name__)
            results.append(_rejected(i, item, InvalidEvent(
                "invalid", f"invalid: the item could not be validated "
                f"({type(exc).__name__}); the gateway counted it as its own error")))
    return ok, results


async def _post_events(request: web.Request) -> web.Response:
    gw = request.app[_STATE]
    gw.metrics.requests += 1
    try:
        caller = _authenticate(request, gw)
        body = await _read_json(request, gw)
        if isinstance(body, dict) and isinstance(body.get("events"), list):
            items = body["events"]
        elif isinstance(body, list):
            items = body
        else:
            items = [body]
        _check_batch(items, gw)
    except _Reply as r:
        return await _reply(request, r)
    return await _finish(gw, *_admit_all(gw, caller, items))


async def _post_ngsi(request: web.Request) -> web.Response:
    gw = request.app[_STATE]
    gw.metrics.requests += 1
    try:
        caller = _authenticate(request, gw)
        source = (request.query.get("source") or request.headers.get("X-IOC-Source")
                  or caller.default_source)
        if not source:
            raise _Reply(_error(400, "source_required", "this publisher may publish for "
                                "several sources: name one with ?source= or X-IOC-Source"))
        body = await _read_json(request, gw)
        items = body if isinstance(body, list) else [body]
        _check_batch(items, gw)
    except _Reply as r:
        return await _reply(request, r)
    return await _finish(gw, *_admit_all(gw, caller, items,
                                         lambda item: ngsi_to_event(item, source=source)))


async def _healthz(request: web.Request) -> web.Response:
    gw = request.app[_STATE]
    try:
        if gw._produce_override is None:
            await gw.producer()
        up = True
    except _BrokerDown:
        up = False
    body = {"kafka": "up" if up else "down", "metrics": msgspec.to_builtins(gw.metrics)}
    if up:
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": str(gw.g.retry_after_s)})


async def _get_scorecards(request: web.Request) -> web.Response:
    from ..scorecard._export import export_answer

    gw = request.app[_STATE]
    status, body, headers = await export_answer(gw.settings, _key_of(request), request.query)
    if status == 401:
        gw.metrics.unauthorized += 1
    return web.json_response(body, status=status, headers=headers or None,
                             content_type="application/ld+json" if status == 200 else
                             "application/json", dumps=lambda o: msgspec.json.encode(o).decode())


_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed"}


@web.middleware
async def _guarded(request: web.Request, handler: Callable[[web.Request], Awaitable[
        web.StreamResponse]]) -> web.StreamResponse:
    """Tell the connection guard a request is being handled; the last-resort catch.

    aiohttp's own 4xx (unknown path, wrong method) get a JSON body with a reason; any
    other exception is a bug of ours: counted, logged (throttled), answered 500.
    """
    gw = request.app[_STATE]
    conn = gw.connections.get(request.transport)
    if conn is not None:
        conn.request_started(request.content)
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        if exc.status >= 500 or exc.empty_body:
            raise
        return _error(exc.status, _HTTP_REASONS.get(exc.status, "bad_request"), exc.reason,
                      **{k: v for k, v in exc.headers.items()
                         if k.lower() in ("allow", "retry-after")})
    except (asyncio.CancelledError, ConnectionError):
        status = 0
        raise  # the client went away: nobody to answer
    except Exception as exc:
        gw.metrics.internal_errors += 1
        gw.bugs.exception("gateway: %s %s raised %s (a bug: answered 500)", request.method,
                          request.path[:100], type(exc).__name__)
        return _error(500, "internal_error", "the gateway failed on this request; it was "
                      "counted and logged")
    finally:
        if conn is not None:
            conn.request_finished()
        if status:
            resource = request.match_info.route.resource
            gw.answered(resource.canonical if resource is not None else "other", status,
                        time.perf_counter() - t0)


def create_gateway_app(settings: Settings, *, produce: Produce | None = None,
                       ) -> web.Application:
    """The aiohttp application; serve it with ``ioc.gateway.GatewayServer``, whose
    listener adds the header timeout and the connection bound.

    Args:
        produce: replaces the Kafka producer (it gets the admitted events and returns
            once they are acknowledged, or raises). Only for unit tests that isolate
            request handling; by default events go to ``<ns>.events.raw``.
    """
    app = web.Application(client_max_size=settings.gateway.max_body_bytes,
                          middlewares=[_guarded])
    app[_SETTINGS] = settings
    gw = _Gateway(settings, produce)
    app[_STATE] = gw
    app.router.add_post("/v1/events", _post_events)
    for path in ("/ngsi-ld/v1/entityOperations/upsert", "/ngsi-ld/v1/entityOperations/create",
                 "/ngsi-ld/v1/entities"):
        app.router.add_post(path, _post_ngsi)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/ngsi-ld/v1/entities", _get_scorecards)

    async def _close(_: web.Application) -> None:
        log.info("gateway stopped: %s", msgspec.to_builtins(gw.metrics))
        await gw.close()

    app.on_cleanup.append(_close)
    return app


def gateway_state(app: web.Application) -> _Gateway:
    """The gateway state of ``app`` (its metrics, its connection table)."""
    return app[_STATE]
