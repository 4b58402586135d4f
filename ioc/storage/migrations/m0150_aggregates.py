"""Window rollups, KPI values and alerts; an hourly rollup view on both storage paths.

* ``rollups``: one row per (entity, metric, size_s, start), last write wins (an
  'updated' rollup is overwritten by later ones and finally by the 'closed' one).
* ``kpi_values``: one row per (kpi, grp, period, period_key) with full counts;
  ``kpi_overall`` sums every group (the province-wide value).
* ``alerts``: one row per alert id (raised, then cleared), keyed (id, raised_at).
* ``rollups_1h``: hourly aggregates of the 1-minute rollups. With TimescaleDB it is a
  real-time continuous aggregate (``materialized_only = false``: materialised buckets
  below the watermark plus the live tail above it), refreshed by a policy over the
  retained history (``_timescale.set_hourly_policy``) and by the sink for the hours it
  writes below the watermark (replays, late windows: ``ioc.aggregate._storage``);
  rollups and alerts are hypertables with compression and retention. Without
  TimescaleDB it is a plain view using ``date_bin``: the same columns and the same
  answers, computed at query time. Why and what it costs: docs/adr/0001.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext
from ._timescale import set_compression, set_hourly_policy

_HOURLY = (
    "select entity, metric, {bucket} as bucket, sum(count)::bigint as count, sum(sum) as sum, "
    "min(min) as min, max(max) as max, sum(sum) / nullif(sum(count), 0) as mean "
    "from {rollups} where size_s = 60 group by entity, metric, {bucket_group}"
)


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    r, k, a = ctx.ident("rollups"), ctx.ident("kpi_values"), ctx.ident("alerts")
    conn.execute(sql.SQL(
        "create table {r} ("
        " entity text not null, metric text not null, size_s integer not null,"
        " start timestamptz not null, count bigint not null, sum float8 not null,"
        " min float8, max float8, last float8, last_time timestamptz,"
        " state text not null check (state in ('updated', 'closed')),"
        " updated_at timestamptz not null default now(),"
        " constraint rollups_key unique (entity, metric, size_s, start))").format(r=r))
    conn.execute(sql.SQL("create index rollups_size_start on {r} (size_s, start desc)").format(r=r))
    conn.execute(sql.SQL(
        "create table {k} ("
        " kpi text not null, grp text not null, period text not null, period_key text not null,"
        " numerator float8 not null, denominator float8 not null, value float8, unit text,"
        " updated_at timestamptz not null default now(),"
        " constraint kpi_values_key unique (kpi, grp, period, period_key))").format(k=k))
    conn.execute(sql.SQL(
        "create view {v} as select kpi, period, period_key, sum(numerator) as numerator, "
        "sum(denominator) as denominator, "
        "100.0 * sum(numerator) / nullif(sum(denominator), 0) as percent "
        "from {k} group by kpi, period, period_key").format(v=ctx.ident("kpi_overall"), k=k))
    conn.execute(sql.SQL(
        "create table {a} ("
        " id text not null, rule text not null, entity text not null, metric text,"
        " severity text not null, state text not null check (state in ('raised', 'cleared')),"
        " start timestamptz not null, raised_at timestamptz not null, cleared_at timestamptz,"
        " value float8, message text not null, scope text not null,"
        " updated_at timestamptz not null default now(),"
        " constraint alerts_key unique (id, raised_at))").format(a=a))
    conn.execute(sql.SQL("create index alerts_entity on {a} (entity, raised_at desc)").format(a=a))
    hourly = ctx.ident("rollups_1h")
    if ctx.timescaledb:
        for table, col, chunk, keep in (("rollups", "start", "1 day", "365 days"),
                                        ("alerts", "raised_at", "7 days", "730 days")):
            q = f"{ctx.schema}.{table}"
            conn.execute(f"select create_hypertable(%s::regclass, '{col}', "
                         f"chunk_time_interval => interval '{chunk}', migrate_data => true)", (q,))
            set_compression(conn, ctx, table)
            conn.execute("select add_compression_policy(%s::regclass, interval '30 days')", (q,))
            conn.execute(f"select add_retention_policy(%s::regclass, interval '{keep}')", (q,))
        bucket = sql.SQL("time_bucket(interval '1 hour', start)")
        conn.execute(sql.SQL(
            "create materialized view {h} with (timescaledb.continuous, "
            "timescaledb.materialized_only = false) as " + _HOURLY + " with no data").format(
                h=hourly, bucket=bucket, bucket_group=bucket, rollups=r))
        set_hourly_policy(conn, ctx)
    else:
        bucket = sql.SQL("date_bin(interval '1 hour', start, timestamptz 'epoch')")
        conn.execute(sql.SQL("create view {h} as " + _HOURLY).format(
            h=hourly, bucket=bucket, bucket_group=bucket, rollups=r))


MIGRATION = Migration(150, "rollups_kpi_values_alerts", apply)
