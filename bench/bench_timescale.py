"""TimescaleDB costs, each next to its baseline measured in the same run.

    IOC_TEST_TIMESCALEDB_DSN=postgresql://... .venv/bin/python bench/bench_timescale.py [--quick]

1. COPY ingest of events (the sink's direct binary COPY, batches of 5,000 rows, one
   transaction each) into the ``events`` hypertable vs a plain table with the same
   columns and the same indexes (``create table ... (like events including all)``),
   alternated ``--repeat`` times; prints rows/s and the ratio hypertable / plain.
2. ``rollups_1h`` with replayed history: the rollups sink writing rollups 30 days old
   with its refresh hook (``refresh_hourly_view``) vs the same writes without it, and
   the refresh policy's run when nothing is left to refresh; plus a 3-day query of the
   continuous aggregate vs the plain-PostgreSQL view over the same rows.
3. Writes into compressed chunks vs uncompressed ones: new events (direct COPY), a
   redelivery of events (COPY refused by the key, then staging + ON CONFLICT DO
   NOTHING) and rollup upserts (ON CONFLICT DO UPDATE); rollups compressed with the
   settings of today (segment by entity, metric, size_s) and with the first ones
   (segment by entity only).

Needs a server that preloads timescaledb (a superuser DSN); its namespaces are dropped
at the end. Figures and their reading: docs/storage.md.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from ioc.aggregate._storage import ROLLUPS_SINK
from ioc.config import Settings, load_settings
from ioc.events._storage import EVENTS_SINK
from ioc.storage import connect, drop_schema, migrate
from ioc.storage.sink import TableWriter

BATCH = 5000
HOUR0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _settings(dsn: str, tag: str, mode: str = "on") -> Settings:
    return load_settings(env={}, overrides={
        "namespace": f"bts{tag}{secrets.token_hex(3)}",
        "database": {"dsn": dsn, "passfile": None, "timescaledb": mode}})


def _event_rows(n: int, first: datetime, *, prefix: str = "e", entities: int = 200,
                span: timedelta = timedelta(days=2)) -> list[tuple[Any, ...]]:
    step = span / n
    return [(first + i * step, "bench", f"{prefix}{i}", "air.quality", f"air-{i % entities:03d}",
             {"pm25": float(i % 97), "no2": float(i % 13)}, {}) for i in range(n)]


def _rollup_rows(entities: int, minutes: int, first: datetime, *, count: int = 1,
                 metrics: Sequence[str] = ("pm25",), hourly: bool = False
                 ) -> list[tuple[Any, ...]]:
    """1-minute rollups (and with ``hourly`` the hour windows too) of each entity/metric."""
    sizes = (60, 3600) if hourly else (60,)
    return [(f"air-{k:03d}", metric, size, first + timedelta(seconds=size * m), count,
             float(m % 50), 0.0, 50.0, 1.0, first, "closed")
            for size in sizes for m in range(minutes * 60 // size)
            for k in range(entities) for metric in metrics]


def _write(w: TableWriter, rows: Sequence[tuple[Any, ...]]) -> float:
    """Seconds to write ``rows`` in sink-sized batches."""
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        w.write(rows[i:i + BATCH])
    return time.perf_counter() - t0


def _sql(s: Settings, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with connect(s.database, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else []


def _pause_jobs(s: Settings) -> dict[tuple[str, str], int]:
    jobs = {(p, t): j for j, p, t in _sql(
        s, "select job_id, proc_name, hypertable_name from timescaledb_information.jobs "
        "where hypertable_schema = %s", s.db_schema)}
    for j in jobs.values():
        _sql(s, "select alter_job(%s, scheduled => false)", j)
    return jobs


def _compress(s: Settings, table: str) -> int:
    rows = _sql(s, "select count(compress_chunk(c, if_not_compressed => true)) from "
                "show_chunks(%s::regclass) c", f"{s.db_schema}.{table}")
    return int(rows[0][0])


def _truncate(s: Settings, table: str) -> None:
    _sql(s, f'truncate "{s.db_schema}".{table}')


def bench_ingest(dsn: str, n: int, repeat: int, made: list[Settings]) -> None:
    ts = _settings(dsn, "i")
    made.append(ts)
    migrate(ts)
    _pause_jobs(ts)
    plain = ts.with_namespace(ts.namespace + "p")
    made.append(plain)
    _sql(plain, f'create schema "{plain.db_schema}"')
    _sql(plain, f'create table "{plain.db_schema}".events (like "{ts.db_schema}".events '
         "including all)")
    idx = {name: sorted(r[0] for r in _sql(s, "select indexdef from pg_indexes where "
                                            "schemaname = %s and tablename = 'events'",
                                            s.db_schema))
           for name, s in (("ts", ts), ("plain", plain))}
    same = ([re.sub(r"INDEX \S+ ON \S+", "INDEX ON t", d) for d in idx["ts"]]
            == [re.sub(r"INDEX \S+ ON \S+", "INDEX ON t", d) for d in idx["plain"]])
    off = _settings(dsn, "o", mode="off")  # the plain path's table (migration 0110: key time first, no BRIN)
    made.append(off)
    migrate(off)
    rows = _event_rows(n, HOUR0 - timedelta(days=3))
    chunks = None
    rates: dict[str, list[float]] = {"hypertable": [], "plain": [], "plain path": []}
    for _ in range(repeat):
        for name, s in (("hypertable", ts), ("plain", plain), ("plain path", off)):
            _truncate(s, "events")
            w = TableWriter(s, EVENTS_SINK)
            try:
                rates[name].append(n / _write(w, rows))
            finally:
                w.close()
        chunks = _sql(ts, "select count(*) from show_chunks(%s::regclass)",
                      f"{ts.db_schema}.events")[0][0]
    h, p = statistics.median(rates["hypertable"]), statistics.median(rates["plain"])
    print(f"\n1. COPY ingest, {n:,} events over 2 days ({chunks} chunks), batches of {BATCH:,}, "
          f"median of {repeat} alternated runs")
    cols = [re.sub(r"^.*? USING \w+ ", "", d) for d in idx["ts"]]
    print(f"   indexes identical: {same} ({len(idx['ts'])} each: {', '.join(cols)})")
    print(f"   hypertable {h:>10,.0f} rows/s   runs: " + ", ".join(f"{r:,.0f}" for r in rates["hypertable"]))
    print(f"   plain      {p:>10,.0f} rows/s   runs: " + ", ".join(f"{r:,.0f}" for r in rates["plain"]))
    o = statistics.median(rates["plain path"])
    print(f"   ratio hypertable / plain: {h / p:.2f}")
    print(f"   (the plain path's own table, unique (time, source, id), no index on time alone: {o:,.0f} rows/s; "
          f"hypertable / it: {h / o:.2f}; runs: " + ", ".join(f"{r:,.0f}" for r in rates["plain path"])
          + ")")


def bench_cagg(dsn: str, entities: int, days: int, repeat: int, made: list[Settings]) -> None:
    ts = _settings(dsn, "c")
    made.append(ts)
    migrate(ts)
    jobs = _pause_jobs(ts)
    refresh_job = jobs[("policy_refresh_continuous_aggregate", "rollups_1h")]
    minutes = days * 1440
    live = _rollup_rows(entities, 180, HOUR0 - timedelta(hours=3))
    old = _rollup_rows(entities, minutes, HOUR0 - timedelta(days=30))
    # live operation first, so the watermark sits above the replayed history
    with_hook = TableWriter(ts, ROLLUPS_SINK)
    without = TableWriter(ts, replace(ROLLUPS_SINK, after_write=None))
    runs: dict[str, list[float]] = {"without": [], "with": []}
    try:
        _write(with_hook, live)
        _sql(ts, "call run_job(%s)", refresh_job)
        for _ in range(repeat):
            for name, w in (("without", without), ("with", with_hook)):
                # the same rows each time, new each time: inserts below the watermark
                _sql(ts, f'delete from "{ts.db_schema}".rollups where start < %s',
                     HOUR0 - timedelta(days=1))
                _sql(ts, "call run_job(%s)", refresh_job)
                runs[name].append(_write(w, old))
    finally:
        with_hook.close()
        without.close()
    t_plain, t_hook = statistics.median(runs["without"]), statistics.median(runs["with"])
    t0 = time.perf_counter()
    _sql(ts, "call run_job(%s)", refresh_job)
    t_policy = time.perf_counter() - t0
    mat = _sql(ts, f'select count(*), sum(count) from "{ts.db_schema}".rollups_1h')[0]
    # a 3-day query over the replayed range, from the aggregate and from a plain view
    plain_view = sql.SQL(
        "select entity, metric, date_bin(interval '1 hour', start, timestamptz 'epoch') as bucket, "
        "sum(count)::bigint as count, sum(sum) as sum from {r} where size_s = 60 "
        "group by 1, 2, 3").format(r=sql.Identifier(ts.db_schema, "rollups")).as_string()
    lo, hi = HOUR0 - timedelta(days=30), HOUR0 - timedelta(days=30 - days)
    q = "select count(*), sum(count) from ({v}) v where bucket >= %s and bucket < %s"
    timings = {}
    for name, view in (("aggregate", f'select * from "{ts.db_schema}".rollups_1h'),
                       ("plain view", plain_view)):
        qruns = []
        for _ in range(5):
            t0 = time.perf_counter()
            got = _sql(ts, q.format(v=view), lo, hi)[0]
            qruns.append(time.perf_counter() - t0)
        timings[name] = (statistics.median(qruns), got)
    n = len(old)
    print(f"\n2. rollups_1h with replayed history: {n:,} one-minute rollups ({entities} entities x "
          f"{days} days, 30 days old) written by the rollups sink in batches of {BATCH:,}")
    print(f"   median of {repeat} alternated runs; seconds of each run: without "
          + ", ".join(f"{t:.2f}" for t in runs["without"]) + "; with "
          + ", ".join(f"{t:.2f}" for t in runs["with"]))
    print(f"   without the refresh hook {n / t_plain:>9,.0f} rows/s ({t_plain:.2f} s)")
    print(f"   with the refresh hook    {n / t_hook:>9,.0f} rows/s ({t_hook:.2f} s): "
          f"{t_hook / t_plain:.2f} x the time, {1000 * (t_hook - t_plain) / (n / BATCH):+.0f} ms "
          "a batch")
    print(f"   hourly rows in the view afterwards: {mat[0]:,} (sum of counts {mat[1]:,} = "
          f"{len(old) + len(live):,} rows written)")
    print(f"   refresh policy run with nothing left to refresh (365-day window): "
          f"{1000 * t_policy:.0f} ms")
    (ta, ga), (tp, gp) = timings["aggregate"], timings["plain view"]
    print(f"   {days}-day query, median of 5: aggregate {1000 * ta:.1f} ms, plain view "
          f"{1000 * tp:.1f} ms (ratio {ta / tp:.2f}); same answer: {ga == gp}")


def bench_compressed(dsn: str, n: int, repeat: int, made: list[Settings]) -> None:
    first = HOUR0 - timedelta(days=40)
    rows = _event_rows(n, first, span=timedelta(hours=20))
    new = _event_rows(n // 4, first, prefix="n", span=timedelta(hours=20))
    entities, minutes, metrics = 40, 600, ("pm25", "no2", "o3")
    ro_rows = _rollup_rows(entities, minutes, first, metrics=metrics, hourly=True)
    ro_upd = _rollup_rows(entities, minutes, first, count=2, metrics=metrics, hourly=True
                          )[:: 4][: n // 4]
    runs: dict[str, dict[str, list[float]]] = {}
    spaces = []
    for label in ("today", "first"):
        s = _settings(dsn, "z")
        made.append(s)
        migrate(s)
        _pause_jobs(s)
        if label == "first":  # migrations 0100/0150 before 0160
            for table, seg, order in (("events", "entity", "time desc"),
                                      ("rollups", "entity", "start desc")):
                _sql(s, f'alter table "{s.db_schema}".{table} set (timescaledb.compress_segmentby '
                     f"= '{seg}', timescaledb.compress_orderby = '{order}')")
        spaces.append((label, s))
    for _ in range(repeat):
        for label, s in spaces:
            for state in ("uncompressed", "compressed"):
                if label == "first" and state == "uncompressed":
                    continue  # the same as today's uncompressed
                for t in ("events", "rollups"):
                    _truncate(s, t)
                ev = TableWriter(s, EVENTS_SINK)
                ro = TableWriter(s, replace(ROLLUPS_SINK, after_write=None))
                r = runs.setdefault(f"{label}/{state}", {})
                try:
                    _write(ev, rows)
                    _write(ro, ro_rows)
                    if state == "compressed":
                        assert _compress(s, "events") >= 1 and _compress(s, "rollups") >= 1
                    r.setdefault("events new", []).append(len(new) / _write(ev, new))
                    r.setdefault("events redelivered", []).append(
                        len(new) / _write(ev, rows[: len(new)]))
                    r.setdefault("rollups upsert", []).append(len(ro_upd) / _write(ro, ro_upd))
                    assert _sql(s, f'select count(*) from "{s.db_schema}".events'
                                )[0][0] == n + len(new)
                    assert _sql(s, f'select count(*) from "{s.db_schema}".rollups where '
                                "count = 2")[0][0] == len(ro_upd)
                finally:
                    ev.close()
                    ro.close()
    results = {k: {w: statistics.median(v) for w, v in r.items()} for k, r in runs.items()}
    print(f"\n3. writes into the chunks of one day 40 days old: {n:,} events and {len(ro_rows):,} "
          f"rollups stored; then {len(new):,} rows each (rows/s, median of {repeat} runs)")
    base = results["today/uncompressed"]
    print(f"   {'':20}{'uncompressed':>14}{'compressed':>14}{'ratio':>8}"
          f"{'compressed, first settings':>30}{'ratio':>8}")
    for what in base:
        c, f = results["today/compressed"][what], results["first/compressed"][what]
        print(f"   {what:20}{base[what]:>14,.0f}{c:>14,.0f}{c / base[what]:>8.2f}"
              f"{f:>30,.0f}{f / base[what]:>8.2f}")
    print("   (first settings: events ordered by time only, rollups segmented by entity only; "
          "rollups: 3 metrics, 1-minute and 1-hour windows; upserts of every 4th key)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("IOC_TEST_TIMESCALEDB_DSN"),
                    help="a superuser DSN of a server preloading timescaledb "
                         "(default $IOC_TEST_TIMESCALEDB_DSN)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--repeat", type=int, default=3, help="alternated ingest runs")
    args = ap.parse_args()
    if not args.dsn:
        ap.error("no DSN: pass --dsn or set IOC_TEST_TIMESCALEDB_DSN")
    n = 50_000 if args.quick else 200_000
    made: list[Settings] = []
    steps: list[Callable[[], None]] = [
        lambda: bench_ingest(args.dsn, n, args.repeat, made),
        lambda: bench_cagg(args.dsn, 20 if args.quick else 50, 3, args.repeat, made),
        lambda: bench_compressed(args.dsn, n // 2, args.repeat, made),
    ]
    version = _sql(load_settings(env={}, overrides={"database": {"dsn": args.dsn, "passfile": None}}),
                   "select extversion from pg_extension where extname = 'timescaledb'")
    print(f"TimescaleDB {version[0][0] if version else '(not created yet)'}, "
          f"{os.cpu_count()} cores, started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    try:
        for step in steps:
            step()
    finally:
        for s in made:
            drop_schema(s)


if __name__ == "__main__":
    main()
