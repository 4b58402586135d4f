"""The Faust app of the experiment: one agent on batched ``<ns>.events`` records.

Per record, in the agent (``concurrency=1``: records of a partition in order)::

    outputs, writes = core.process(partition, offset, value, load=table.get)
    produce the outputs, wait until the broker acknowledged every one of them
    table[key] = state bytes         (one write per touched key per table per record:
                                      RocksDB put + changelog record in the partition)

Outputs are acknowledged before the state that led to them is written, as in the
stages (a crash in between re-applies the record from the old state; the reverse order
could store a state whose 'closed' rollup never reached the broker). Faust commits the
input offsets after flushing its producer (so after the changelog records too).

State: three Faust tables (``agg-windows``, ``kpi-counts``, ``rule-states``) on
RocksDB (``store="rocksdb://"``, rocksdict), with ``table_standby_replicas=1``. A
restart on the same data directory reads only the changelog tail past the offset
RocksDB remembers; a new host reads the whole changelog.

Timers: held-back 'updated' rollups every ``update_interval_s / 4``; absence rules
every ``absence_check_every_s`` over the rule states of the owned partitions. Faust
allows table writes only inside an event (the changelog partition is the event's), so
the absence timer writes through ``Table.send_changelog`` and the RocksDB store of the
partition (Faust internals; a cost of this path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust

from ioc.config import Settings
from ioc.topics import spec, topic_name

from ..app import faust_broker_url
from ._core import RULES, TABLES, CoreOutput, EventCore

__all__ = ["create_faust_app"]

log = logging.getLogger(__name__)


def create_faust_app(settings: Settings, *, data_dir: Path) -> faust.App:
    """The experiment's Faust app for ``settings.namespace`` (app id ``<ns>-faustpath``)."""
    ns = settings.namespace
    s = settings.streams
    parts = spec("events").partitions
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{ns}-faustpath",
        broker=faust_broker_url(settings),
        autodiscover=False,
        store="rocksdb://",
        table_standby_replicas=1,
        value_serializer="raw",
        key_serializer="raw",
        datadir=str(data_dir),
        web_enabled=False,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_partitions=parts,
        topic_allow_declare=True,
        producer_acks=-1,
        stream_wait_empty=False,
        broker_commit_every=1000,
        broker_commit_interval=s.commit_every_s,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        producer_linger=s.producer_linger_s,
    )
    tables = {name: app.Table(name, partitions=parts, key_type=bytes,
                              value_type=bytes) for name in TABLES}
    core = EventCore(settings)
    app._ioc_core = core  # type: ignore[attr-defined]
    events = app.topic(topic_name(ns, "events"), key_serializer="raw", value_serializer="raw",
                       partitions=parts)
    producer_send = None

    async def send(outputs: list[CoreOutput]) -> None:
        nonlocal producer_send
        if not outputs:
            return
        if producer_send is None:
            producer_send = app.producer.send
        futs = [await producer_send(o.topic, o.key, o.value, o.partition, None, o.headers)
                for o in outputs]
        await asyncio.gather(*futs)

    def load(table: str, key: bytes) -> bytes | None:
        return tables[table].get(key)  # type: ignore[no-any-return]

    @app.agent(events, name="event-path", concurrency=1)
    async def event_path(stream: Any) -> None:
        last_log = time.monotonic()
        async for ev in stream.events():
            m = ev.message
            outputs, writes = core.process(m.partition, m.offset, m.value, load,
                                           headers=list(m.headers or ()))
            await send(outputs)
            for table, key, value in writes:
                tables[table][key] = value
            if time.monotonic() - last_log > 60:
                last_log = time.monotonic()
                log.info("faust-path: %s", core.metrics)

    @app.timer(max(0.02, s.aggregate.update_interval_s / 4))
    async def held_updates() -> None:
        await send(core.due())

    if core.absence:
        @app.timer(s.absence_check_every_s)
        async def absence() -> None:
            table = tables[RULES]
            store: Any = table.data
            items = [(k, v, p) for p, db in list(getattr(store, "_dbs", {}).items())
                     for k, v in db.items() if k != store.offset_key]
            outputs, changed = core.check_absence(items, time.time())
            await send(outputs)
            for p, key, value in changed:
                store._db_for_partition(p).put(key, value)
                table.send_changelog(p, key, value)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(_app: Any, revoked: Any, **_kw: Any) -> None:
        core.forget(tp.partition for tp in revoked if tp.topic == events.get_topic_name())

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(_app: Any, assigned: Any, **_kw: Any) -> None:
        # states of newly assigned partitions are restored from changelogs: drop ours
        core.forget(tp.partition for tp in assigned if tp.topic == events.get_topic_name())

    return app
