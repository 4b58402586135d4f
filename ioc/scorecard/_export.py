"""The scorecard export of the gateway: ``GET /ngsi-ld/v1/entities?type=KeyPerformanceIndicator``.

Thin I/O around the pure core: authenticate a reader, parse the query, read the
counts of the asked period and the one before from ``scorecard_counts``, and return
``kpi_entities(build_scorecard(...))``. Query parameters::

    type       KeyPerformanceIndicator (required; NGSI-LD entity query)
    period     month | quarter | year                  (default year)
    periodKey  '2021', '2021-Q3', '2021-03'            (default: the latest stored)
    level      a drill level id of scorecards.levels   (default: the first)
    indicator  comma-separated indicator ids, 'total' for the total score (default all)

Access needs a reader key (``scorecards.readers``; ``Authorization: Bearer <key>`` or
``X-API-Key``): a publisher's key cannot read and a reader's cannot publish. Answers:
200 a JSON array of entities (``application/ld+json``, ``@context`` in each), 400 a
bad query (NGSI-LD ``BadRequestData`` problem, naming the parameter), 401 no or
unknown key, 503 + Retry-After when the database did not answer within
``scorecards.export_timeout_s`` or when ``scorecards.export_max_concurrent`` requests are
already reading it (load is shed, not queued: each request holds a connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from ..config import Settings
from ..errors import StorageError
from ..gateway._auth import hash_key
from ..storage._db import connect_async
from ._ngsi import kpi_entities
from ._periods import PERIODS, _parse, previous_period
from ._score import build_scorecard
from ._storage import counts_query, latest_key_query, leaves_of_rows

__all__ = ["ExportQuery", "export_answer", "parse_query"]

ENTITY_TYPE = "KeyPerformanceIndicator"
_BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


# Export requests of this process reading the database now (one event loop per
# gateway process: no lock needed). Beyond export_max_concurrent: 503 at once.
_in_flight = 0
shed = 0  # requests answered 503 because of it


class BadQuery(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class ExportQuery:
    period: str
    period_key: str | None
    level: str
    indicators: frozenset[str] | None


def parse_query(settings: Settings, q: Mapping[str, str]) -> ExportQuery:
    """The export query of request parameters ``q``.

    Raises:
        BadQuery: naming the parameter, what was expected and what arrived.
    """
    cfg = settings.scorecards
    t = q.get("type")
    if t != ENTITY_TYPE:
        raise BadQuery("type", f"expected {ENTITY_TYPE!r}, got {t!r}")
    period = q.get("period", "year")
    if period not in PERIODS:
        raise BadQuery("period", f"expected one of {list(PERIODS)}, got {period[:40]!r}")
    key = q.get("periodKey")
    if key is not None:
        try:
            _parse(period, key)
        except ValueError as exc:
            raise BadQuery("periodKey", str(exc)) from None
    levels = [lv.id for lv in cfg.levels]
    level = q.get("level", levels[0])
    if level not in levels:
        raise BadQuery("level", f"expected one of {levels}, got {level[:40]!r}")
    wanted = None
    if q.get("indicator"):
        wanted = frozenset(x.strip() for x in q["indicator"].split(",") if x.strip())
        known = {i.id for i in cfg.indicators} | {"total"}
        unknown = sorted(wanted - known)
        if unknown:
            raise BadQuery("indicator", f"unknown {unknown[:5]}; known: {sorted(known)}")
    return ExportQuery(period, key, level, wanted)


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": _BAD if status == 400 else "about:blank", "title": title, "detail": detail}


async def _read(settings: Settings, q: ExportQuery) -> tuple[str | None, list[Any], list[Any]]:
    cfg = settings.scorecards
    conn = await connect_async(settings.database, autocommit=True)
    try:
        await conn.execute("select set_config('statement_timeout', %s, false)",
                           (str(int(cfg.export_timeout_s * 1000)),))
        key = q.period_key
        if key is None:
            row = await (await conn.execute(latest_key_query(settings.db_schema),
                                            {"period": q.period})).fetchone()
            key = row[0] if row else None
            if key is None:
                return None, [], []
        prev = previous_period(q.period, key)
        rows = await (await conn.execute(counts_query(settings.db_schema), {
            "period": q.period, "keys": [key, prev], "limit": cfg.max_rows})).fetchall()
    finally:
        await conn.close()
    cur = [r for r in rows if r[2] == key]
    old = [r for r in rows if r[2] == prev]
    return key, cur, old


async def export_answer(settings: Settings, key: str | None, params: Mapping[str, str], *,
                        now: float | None = None) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers) of one export request (see the module docstring)."""
    cfg = settings.scorecards
    readers = {r.key_sha256 for r in cfg.readers.values()}
    if not key or hash_key(key) not in readers:
        why = "no API key" if not key else "unknown reader key"
        return 401, {"error": "unauthorized", "message": f"{why}: the scorecard export needs "
                     "a reader key (scorecards.readers), sent as 'Authorization: Bearer "
                     "<key>' or 'X-API-Key'"}, {"WWW-Authenticate": "Bearer"}
    try:
        q = parse_query(settings, params)
    except BadQuery as exc:
        return 400, _problem(400, f"bad parameter {exc.param!r}", str(exc)), {}
    global _in_flight, shed
    if _in_flight >= cfg.export_max_concurrent:
        shed += 1
        return 503, _problem(503, "scorecards busy", f"{_in_flight} export requests are "
                             "reading the database (scorecards.export_max_concurrent)"), {
                                 "Retry-After": "1"}
    _in_flight += 1
    try:
        async with asyncio.timeout(cfg.export_timeout_s):
            period_key, cur, old = await _read(settings, q)
    except (TimeoutError, StorageError, psycopg.Error) as exc:
        detail = (f"the database did not answer within {cfg.export_timeout_s:g} s "
                  "(scorecards.export_timeout_s)" if isinstance(exc, TimeoutError)
                  else f"the database failed: {str(exc).strip()[:200]}")
        return 503, _problem(503, "scorecards unavailable", detail), {"Retry-After": "5"}
    finally:
        _in_flight -= 1
    if period_key is None:
        return 200, [], {}
    tz = ZoneInfo(settings.streams.timezone)
    t = time.time() if now is None else now
    cards = build_scorecard(cfg, leaves_of_rows(cur), leaves_of_rows(old), period=q.period,
                            period_key=period_key, level=q.level, tz=tz, now=t)
    ents = kpi_entities(cfg, cards, namespace=settings.namespace, tz=tz, now=t)
    if q.indicators is not None:
        ents = [e for e in ents if e["indicator"] in q.indicators]
    return 200, ents, {}
