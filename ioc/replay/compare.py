"""Compare the results of two namespaces (runs, or a live run and its replay).

Sections, each from whatever exists in each namespace:

- ``detections``: per camera and per camera/zone counts from the ``detections`` table
  (frames, analysed, motion-active frames per zone, people summed per zone, tamper).
- ``rollups``, ``kpi_values``, ``alerts``: the sink's tables (key = their unique key;
  ``updated_at``-like columns ignored).
- ``rollups@topic``, ``kpis@topic``, ``alerts@topic``: the latest value per key on the
  agents' output topics, which exist whether or not a sink writes the tables.
- ``events``: rows in the ``events`` table (what the run was fed).

``diff_maps`` is the pure core: two ``key -> value`` maps in, differences out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import sql

from ..config import Settings

__all__ = ["SectionDiff", "compare_namespaces", "diff_maps", "format_report"]


@dataclass
class SectionDiff:
    """One section's comparison; ``absent`` names the side(s) without the data."""

    name: str
    source: str
    count_a: int = 0
    count_b: int = 0
    rows: list[tuple[str, Any, Any]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def same(self) -> bool:
        return not self.rows and not self.absent and not self.error


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))
        except (TypeError, ValueError):
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def diff_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for keys whose values differ; a missing side is
    ``None``. Floats compare with a relative tolerance of 1e-9 (sums in another order)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if k not in a or k not in b or not _close(va, vb):
            out.append((k, va, vb))
    return out


def _scalar(conn: Any, q: Any) -> int:
    row = conn.execute(q).fetchone()
    return int(row[0]) if row else 0


def _has_table(conn: Any, schema: str, table: str) -> bool:
    return conn.execute(
        "select 1 from information_schema.tables where table_schema = %s and table_name = %s",
        (schema, table)).fetchone() is not None


_DETECTIONS_SQL = """
select camera || ' frames', count(*)::float8 from {t} group by camera
union all
select camera || ' analysed', (count(*) filter (where skipped is null))::float8 from {t} group by camera
union all
select camera || ' tamper_frames', (count(*) filter (where tamper))::float8 from {t} group by camera
union all
select camera || ' zone=' || z.zone || ' motion_frames', count(*)::float8
  from {t} cross join lateral jsonb_array_elements_text(
    case when jsonb_typeof(result->'motion'->'active') = 'array'
         then result->'motion'->'active' else '[]'::jsonb end) as z(zone)
  group by camera, z.zone
union all
select camera || ' zone=' || z.key || ' people_sum', sum((z.value)::float8)
  from {t} cross join lateral jsonb_each_text(
    case when jsonb_typeof(result->'people'->'zones') = 'object'
         then result->'people'->'zones' else '{{}}'::jsonb end) as z
  group by camera, z.key
"""


def _detections(conn: Any, schema: str) -> dict[str, Any]:
    q = sql.SQL(_DETECTIONS_SQL).format(t=sql.Identifier(schema, "detections"))
    return {k: v for k, v in conn.execute(q).fetchall()}


def _table_rows(conn: Any, schema: str, table: str) -> dict[str, Any]:
    """A generic table as ``key -> row``: key = the primary key or unique columns."""
    cols = [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = %s "
        "and table_name = %s order by ordinal_position", (schema, table)).fetchall()]
    key_cols = [r[0] for r in conn.execute(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
        "and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisunique "
        "order by a.attnum", (f'"{schema}"."{table}"',)).fetchall()] or cols
    volatile = {"received_at", "updated_at", "produced_at", "inserted_at"}
    keep = [c for c in cols if c not in volatile]
    rows = conn.execute(sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in keep),
        sql.Identifier(schema, table))).fetchall()
    out = {}
    for r in rows:
        d = dict(zip(keep, r, strict=True))
        out["|".join(str(d[c]) for c in key_cols if c in d)] = {
            k: (v if isinstance(v, (int, float, str, bool, dict, list, type(None))) else str(v))
            for k, v in d.items()}
    return out


def _topic_latest(settings: Settings, topic: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Latest JSON value per key on ``topic`` (None when the topic does not exist)."""
    import time

    from ..kafka import kafka_python_kwargs
    from ..kafka.kafka_python import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(settings.kafka))
    try:
        if topic not in consumer.topics():
            return None
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for recs in consumer.poll(timeout_ms=200, max_records=20000).values():
                for r in recs:
                    k = (r.key or b"").decode("utf-8", "replace")
                    if r.value is None:
                        out.pop(k, None)
                        continue
                    try:
                        out[k] = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        out[k] = r.value.hex()[:64]
        return out
    finally:
        consumer.close()


def compare_namespaces(base: Settings, ns_a: str, ns_b: str) -> list[SectionDiff]:
    """Compare the results stored in namespaces ``ns_a`` and ``ns_b``."""
    from ..storage import connect

    sa, sb = base.with_namespace(ns_a), base.with_namespace(ns_b)
    out: list[SectionDiff] = []
    with connect(base.database, autocommit=True) as conn:
        def tables(name: str) -> tuple[bool, bool]:
            return _has_table(conn, ns_a, name), _has_table(conn, ns_b, name)

        # events fed to each run: only counted
        ea, eb = tables("events")
        sec = SectionDiff("events", "table events (row count)")
        sec.absent = [n for n, has in ((ns_a, ea), (ns_b, eb)) if not has]
        if not sec.absent:
            q = "select count(*) from {}"
            ca = _scalar(conn, sql.SQL(q).format(sql.Identifier(ns_a, "events")))
            cb = _scalar(conn, sql.SQL(q).format(sql.Identifier(ns_b, "events")))
            sec.count_a, sec.count_b = ca, cb
            if ca != cb:
                sec.rows.append(("rows", ca, cb))
        out.append(sec)

        da, db = tables("detections")
        sec = SectionDiff("detections", "table detections (counts per camera and zone)")
        sec.absent = [n for n, has in ((ns_a, da), (ns_b, db)) if not has]
        if not sec.absent:
            try:
                ma, mb = _detections(conn, ns_a), _detections(conn, ns_b)
                sec.count_a, sec.count_b = len(ma), len(mb)
                sec.rows = diff_maps(ma, mb)
            except Exception as exc:  # a schema from another version: say so, go on
                sec.error = f"query failed: {exc}"
        out.append(sec)

        for table in ("rollups", "kpi_values", "alerts"):
            ta, tb = tables(table)
            sec = SectionDiff(table, f"table {table}")
            sec.absent = [n for n, has in ((ns_a, ta), (ns_b, tb)) if not has]
            if not sec.absent:
                try:
                    ma, mb = _table_rows(conn, ns_a, table), _table_rows(conn, ns_b, table)
                    sec.count_a, sec.count_b = len(ma), len(mb)
                    sec.rows = diff_maps(ma, mb)
                except Exception as exc:
                    sec.error = f"query failed: {exc}"
            out.append(sec)
    # The topics hold the agents' results even where no sink writes the tables.
    for suffix in ("rollups", "kpis", "alerts"):
        sec = SectionDiff(f"{suffix}@topic", f"topic <ns>.{suffix}, latest value per key")
        try:
            ma2 = _topic_latest(sa, f"{ns_a}.{suffix}")
            mb2 = _topic_latest(sb, f"{ns_b}.{suffix}")
        except Exception as exc:
            sec.error = f"reading topics failed: {exc}"
            out.append(sec)
            continue
        sec.absent = [n for n, m in ((ns_a, ma2), (ns_b, mb2)) if m is None]
        if ma2 is not None and mb2 is not None:
            sec.count_a, sec.count_b = len(ma2), len(mb2)
            sec.rows = diff_maps(ma2, mb2)
        out.append(sec)
    return out


def _short(v: Any, width: int = 38) -> str:
    s = "-" if v is None else (orjson.dumps(v).decode() if isinstance(v, (dict, list)) else str(v))
    return s if len(s) <= width else s[:width - 1] + "…"


def format_report(ns_a: str, ns_b: str, sections: list[SectionDiff], *, max_rows: int = 40) -> list[str]:
    """The printed table: a summary line per section, then differing keys."""
    lines = [f"compare A={ns_a} B={ns_b}", f"{'section':14} {'A':>8} {'B':>8}  result   [source]"]
    for s in sections:
        if s.error:
            status = f"ERROR {s.error}"
        elif s.absent:
            status = "ABSENT in " + ", ".join(s.absent)
        elif s.rows:
            status = f"{len(s.rows)} difference(s)"
        else:
            status = "same"
        lines.append(f"{s.name:14} {s.count_a:>8} {s.count_b:>8}  {status}   [{s.source}]")
    diffs = [(s.name, *r) for s in sections for r in s.rows]
    if diffs:
        lines.append("")
        lines.append(f"{'section':14} {'key':44} {'A':>38} {'B':>38}")
        for name, k, a, b in diffs[:max_rows]:
            if isinstance(a, dict) and isinstance(b, dict):  # only the fields that differ
                fields = [f for f in sorted(set(a) | set(b)) if not _close(a.get(f), b.get(f))]
                a, b = {f: a.get(f) for f in fields}, {f: b.get(f) for f in fields}
            lines.append(f"{name:14} {_short(k, 44):44} {_short(a):>38} {_short(b):>38}")
        if len(diffs) > max_rows:
            lines.append(f"... and {len(diffs) - max_rows} more difference(s)")
    return lines
