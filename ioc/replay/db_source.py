"""Replay source: historical events from a namespace's ``events`` table.

Rows become canonical events (``ioc.events.encode_event``) keyed by entity, in the
partition a keyed producer would choose (``ioc.kafka.partition_for``), in
event-time order; the Kafka timestamp is the event time. Read with a server-side
cursor, so memory stays bounded whatever the range.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from psycopg import sql

from ..config import Settings
from ..errors import StorageError
from ..topics import topic_name
from .format import KafkaRecord

__all__ = ["count_events", "db_events"]


def _table_exists(conn, schema: str) -> bool:  # type: ignore[no-untyped-def]
    return conn.execute(
        "select 1 from information_schema.tables where table_schema = %s and table_name = 'events'",
        (schema,)).fetchone() is not None


def count_events(settings: Settings, start_s: float, end_s: float) -> int:
    """How many stored events have ``start_s <= time < end_s``.

    Raises:
        StorageError: the namespace has no events table.
    """
    from ..storage import connect

    with connect(settings.database, autocommit=True) as conn:
        if not _table_exists(conn, settings.db_schema):
            raise StorageError(f"schema {settings.db_schema!r} has no events table "
                               "(expected migration 0100 events)")
        row = conn.execute(sql.SQL("select count(*) from {} where time >= %s and time < %s").format(
            sql.Identifier(settings.db_schema, "events")),
            (datetime.fromtimestamp(start_s, UTC), datetime.fromtimestamp(end_s, UTC))).fetchone()
        return int(row[0]) if row else 0


def db_events(settings: Settings, start_s: float, end_s: float, *, batch: int = 5000,
              partitions: int | None = None) -> Iterator[tuple[int, KafkaRecord]]:
    """``(event time ns, record for <ns>.events)`` for stored events in ``[start_s, end_s)``,
    each in its entity's partition of a topic of ``partitions`` partitions (default: the
    count ``settings.topics`` gives <ns>.events)."""
    from ..events import Event, encode_event
    from ..kafka import partition_for
    from ..storage import connect

    topic = topic_name(settings.namespace, "events")
    parts = partitions or settings.topics.spec("events").partitions
    with connect(settings.database) as conn, conn.cursor(name="ioc_replay_events") as cur:
        cur.itersize = batch
        cur.execute(sql.SQL(
            "select time, source, id, type, entity, values, attributes from {} "
            "where time >= %s and time < %s order by time, source, id").format(
                sql.Identifier(settings.db_schema, "events")),
            (datetime.fromtimestamp(start_s, UTC), datetime.fromtimestamp(end_s, UTC)))
        for i, (t, source, eid, etype, entity, values, attrs) in enumerate(cur):
            ts = t.timestamp()
            ev = Event(id=eid, source=source, type=etype, entity=entity, time=ts,
                       values=values, attributes=attrs)
            key = entity.encode()
            p = partition_for(key, parts)
            ms = round(ts * 1000)
            yield round(ts * 1e9), KafkaRecord(topic, p, i, ms, key, encode_event(ev), (), 0)
