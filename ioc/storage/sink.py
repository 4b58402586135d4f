"""A generic, batched, idempotent Kafka -> PostgreSQL writer.

A ``TableSink`` says which topic feeds which table and how a message becomes rows.
``run_sinks`` consumes each spec's topic with a plain confluent-kafka (librdkafka)
consumer (manual commits) and writes batches like this::

    COPY rows (binary) -> temp staging table            (fast bulk path)
    INSERT INTO target SELECT ... FROM staging
        ON CONFLICT (<conflict key>) DO NOTHING | DO UPDATE  (idempotent)
    COMMIT                                               (rows durable)
    commit Kafka offsets of the batch                    (only now)

So a crash between the database commit and the offset commit only causes a
redelivery that the conflict key absorbs: no duplicates, nothing lost.

First-write-wins tables (``on_conflict="nothing"``: events, detections) take a faster
path first: COPY straight into the target, whose unique key refuses a batch holding a
row already there; only then is the batch rolled back and written through staging and
``ON CONFLICT DO NOTHING``. Redeliveries are rare (after a crash or a rebalance), and
the direct COPY costs PostgreSQL ~40% less CPU per row than staging + merge
(docs/performance/events.md).

Batches are written in offset order, one at a time, while the next one is consumed
and decoded (a one-batch pipeline: offsets are still committed only after their rows,
and no batch before the previous one succeeded). A batch that fills up before its
linger ends doubles the next one's size, up to ``SinkOptions.drain_batch_rows``: a
backlog is written in fewer, larger transactions, and a last-write-wins table keeps
one row per key of each batch.

Some tables go first (``SinkOptions.first_tables``: events): while one of them is
behind (``drain_batch_rows`` or more of its records still to store: not yet consumed,
by the high watermarks its consumer last fetched, or read but not yet written; or it has
just come back from a database outage), the runners of the other tables finish the batch they are writing
and then wait, their partitions paused and still polling, at most ``first_hold_s`` in a
row (``_sink_precedence.Precedence``). After an outage the events table is current
first; the derived tables (rollups, alerts...) drain after it. For
``SinkOptions.first_settle_s`` after a first table caught up, the others also wait
whenever it has ``batch_rows // 2`` or more records still to store: their drain would
otherwise take the CPU and database it needs to stay current; and together they write
at most ``SinkOptions.first_settle_duty`` of the time (one at a time; after a write of
any of them, all of them wait).

When the database is unreachable, the sink keeps its in-memory batches (at most two,
each bounded by ``SinkOptions.drain_batch_rows``), pauses every assigned partition so
nothing more is fetched (the rest stays in Kafka), retries with exponential backoff
(cut short once the database accepts a connection again), and resumes when a write
succeeds. A message whose rows the database refuses (bad data, not a
connection problem), that psycopg cannot encode, or that ``to_rows`` cannot read
(whatever it raises), is isolated (by bisecting the batch), logged with
topic/partition/offset (throttled: one line per reason every 10 s), counted in
``SinkMetrics.messages_rejected`` and sent to ``<ns>.dlq`` with its original bytes and
``dlq.*`` headers; the batch's offsets are committed only after the broker
acknowledged those dead letters.

Why not Faust: the sink needs exactly "commit offset N only after rows up to N are
durable", per batch. A plain consumer with ``enable.auto.commit=false`` gives that in
a few lines; Faust's offset commits follow its own acking of stream events, and its
per-event machinery costs throughput we want for COPY. Why librdkafka rather than
aiokafka: the sink reads every event, and a produce+consume costs ~5 µs of client CPU
with librdkafka against ~36 µs with aiokafka. Its blocking calls (consume, commit,
flush) run in worker threads, so several sinks still share one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import orjson
import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.types.json import set_json_dumps

from ..config import Settings
from ..errors import StorageError
from ..events._deadletter import LogThrottle, dead_letter_headers
from ..kafka.clients import (
    acked_producer,
    discard_producer,
    fatal_consumer_error,
    is_fatal,
    rdkafka_conf,
    refenced,
)
from ..kafka.membership import MembershipWatch
from ..metrics.hist import Histogram
from ..topics import topic_name
from ._db import connect
from ._sink_precedence import Precedence

if TYPE_CHECKING:  # confluent_kafka is imported when a sink runs (it takes ~80 ms)
    from ..kafka.rdkafka import Consumer, Message, Producer, TopicPartition

__all__ = [
    "Headers",
    "SinkMetrics",
    "SinkOptions",
    "SinkStalled",
    "TableSink",
    "TableWriter",
    "abandoned_consumers",
    "behind_after",
    "exit_on_stall",
    "next_batch_rows",
    "run_sinks",
]

log = logging.getLogger(__name__)

# Consumers given up while one of their calls still runs (see _replace_consumer): kept
# referenced so that they are never freed under that call.
_ABANDONED: list[Any] = []
# ids of consumers whose memberid() read runs in a thread, outside their lock (_member_id)
_READING: set[int] = set()

_T = TypeVar("_T")

# How long the sink waits for librdkafka's memberid() before it counts the consumer as
# outside its group (the read goes on in its thread; see _TableSinkRunner._member_id).
MEMBER_READ_S = 2.0

Headers = Sequence[tuple[str, bytes]]
RowsFn = Callable[[bytes | None, bytes | None, Headers], Sequence[tuple[Any, ...]]]
AfterWriteFn = Callable[[psycopg.Connection, Settings, Sequence[Sequence[Any]]], None]


@dataclass(frozen=True)
class TableSink:
    """One topic -> one table.

    Attributes:
        name: short name used by ``ioc sink --tables`` and in the consumer group id.
        topic_suffix: topic ``<ns>.<suffix>`` to read.
        table: target table in the namespace's schema (created by a migration).
        columns: target columns filled by ``to_rows``, in order.
        types: PostgreSQL type of each column, for binary COPY (``timestamptz``,
            ``text``, ``float8``, ``int8``, ``bool``, ``jsonb``...).
        conflict: the unique key that makes a redelivered row a no-op.
        to_rows: ``(key, value, headers) -> rows``; raise to reject a message (it is
            logged with topic/partition/offset and counted, never silently dropped).
        on_conflict: ``nothing`` (first write wins: events) or ``update`` (last write
            wins: rollups or KPI values that are re-emitted with later figures).
        after_write: ``(connection, settings, rows)`` called once a batch's rows are
            committed, on the writer's connection outside any transaction (the hourly
            rollup view's refresh). It raises only ``psycopg.OperationalError`` (the
            batch is then retried, idempotently); other failures it logs itself.
        copy_types: when ``to_rows`` returns values already in their column's binary
            COPY format, the type whose (C) dumper sends each one as it is: ``int8`` for
            a ``timestamptz`` (microseconds since 2000-01-01 UTC), ``bytea`` for a
            ``jsonb`` (``b"\\x01"`` + JSON text). None: the rows hold Python values of
            ``types`` (``datetime``, ``dict``...). ``TableWriter.write(rows)`` takes rows
            of ``types`` either way; the sink passes its ``to_rows`` rows with
            ``encoded=True``.
    """

    name: str
    topic_suffix: str
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    conflict: tuple[str, ...]
    to_rows: RowsFn
    on_conflict: Literal["nothing", "update"] = "nothing"
    description: str = ""
    after_write: AfterWriteFn | None = None
    copy_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(f"sink {self.name}: {len(self.columns)} columns but "
                             f"{len(self.types)} types")
        if self.copy_types is not None and len(self.copy_types) != len(self.columns):
            raise ValueError(f"sink {self.name}: {len(self.columns)} columns but "
                             f"{len(self.copy_types)} copy types")
        missing = [c for c in self.conflict if c not in self.columns]
        if missing or not self.conflict:
            raise ValueError(f"sink {self.name}: conflict key {self.conflict} must be a "
                             f"non-empty subset of the columns {self.columns}")

    def key_of(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[self.columns.index(c)] for c in self.conflict)


@dataclass(frozen=True)
class SinkOptions:
    """Batching and retry knobs (``ioc sink --help`` shows them as options)."""

    batch_rows: int = 5000
    # While behind (each batch filled up before its linger ended), batches double up
    # to this: last-write-wins tables keep one row per key of a batch, so a backlog of
    # re-emitted rollups shrinks with the batch; back to batch_rows after a batch that
    # did not fill. A sink holds at most two batches (one written, one filling).
    drain_batch_rows: int = 20_000
    linger_s: float = 0.5
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    report_every_s: float = 10.0
    # A sink whose blocking call (consume, commit, write, flush) has not returned for
    # this long is stuck: it cannot poll, so its consumer cannot rejoin its group.
    # The longest bounded call seen: a commit queued to a stopped broker, ~70 s.
    stall_s: float = 120.0
    # An offset commit that has not returned by then never will: the consumer is
    # replaced (the rows are durable; the new one re-reads from the last commit).
    commit_timeout_s: float = 45.0
    # A consumer that polls but has had no member id (outside its group, not rejoining:
    # seen after a broker stop) is replaced by a new one: after ``rejoin_s`` counted from
    # when the broker answers again, or ``first_join_s`` for one that never joined
    # (ioc/kafka/membership.py).
    rejoin_s: float = 12.0
    first_join_s: float = 60.0
    # While one of these tables is behind (drain_batch_rows or more of its records still
    # to store, or it just came back from a database outage; caught up below
    # batch_rows: behind_after), the other tables wait, their partitions
    # paused: after an outage the events are current first, the derived tables after
    # them. A table waits at most first_hold_s in a row, then is not held again for as
    # long (_sink_precedence.Precedence).
    first_tables: tuple[str, ...] = ("events",)
    first_hold_s: float = 90.0
    # For this long after a first table caught up, the others also wait whenever it has
    # batch_rows // 2 or more records still to store: draining beside it, they slowed
    # its writes tenfold on 2 cores (_sink_precedence.Precedence).
    first_settle_s: float = 120.0
    # ... and while it settles, the others together write at most this share of the time
    # (one at a time; after a write of w s by any of them, all wait w s at 0.5): at full pace between
    # those waits they slowed its writes sixfold and starved the workers
    # (docs/reliability.md, session 12); each at this duty on its own, two large tables
    # still wrote most of the time between them (session 13).
    first_settle_duty: float = 0.5


@dataclass
class SinkMetrics:
    """Counters of one sink; logged every ``report_every_s`` and at stop."""

    messages: int = 0
    rows_staged: int = 0
    rows_inserted: int = 0
    batches: int = 0
    db_failures: int = 0
    messages_rejected: int = 0
    paused_s: float = 0.0
    commit_failures: int = 0
    write_s: float = 0.0  # time spent in database writes (COPY + merge + commit)
    consumer_restarts: int = 0  # consumers replaced after a call that never returned
    direct_fallbacks: int = 0  # batches the unique key sent from direct COPY to the merge
    early_resumes: int = 0  # backoffs cut short: the database accepted a connection again
    held_s: float = 0.0  # seconds waited while a first table (events) was behind
    # for /metrics (ioc.metrics.sink): acknowledged dead letters by reason, seconds of
    # each batch write, and when the current database outage began (monotonic; None: up)
    dead_letters: dict[str, int] = field(default_factory=dict)
    write_seconds: Histogram = field(default_factory=Histogram)
    down_since: float | None = None

    @property
    def rows_duplicate(self) -> int:
        return self.rows_staged - self.rows_inserted

    def line(self) -> str:
        return (f"messages={self.messages} rows_inserted={self.rows_inserted} "
                f"duplicates={self.rows_duplicate} batches={self.batches} "
                f"rejected={self.messages_rejected} db_failures={self.db_failures} "
                f"paused_s={self.paused_s:.1f} commit_failures={self.commit_failures} "
                f"write_s={self.write_s:.1f} direct_fallbacks={self.direct_fallbacks} "
                f"early_resumes={self.early_resumes} held_s={self.held_s:.1f} "
                f"consumer_restarts={self.consumer_restarts}")


LAG_STALE_S = 1.0  # after a resume, the cached watermarks are not read for this long


def next_batch_rows(cap: int, *, filled: bool, options: SinkOptions) -> int:
    """The next batch's size after one of ``cap`` rows: doubled (up to
    ``drain_batch_rows``) when it ``filled`` before its linger ended, else
    ``batch_rows``. Never below ``batch_rows``."""
    if not filled:
        return options.batch_rows
    return max(options.batch_rows, min(2 * cap, options.drain_batch_rows))


def behind_after(cap: int, *, filled: bool, options: SinkOptions,
                 lag: int | None = None) -> bool | None:
    """What a batch of ``cap`` rows says of its table's backlog (for ``Precedence``).

    ``lag``, when known: the records still to store: those the consumer has not yet
    handed to the sink (cached high watermarks minus positions, ``_lag_of``) plus the
    rows of the batches read but not yet written. It decides: True,
    behind, from ``drain_batch_rows`` records on (a sustained backlog); False, caught
    up, below ``batch_rows``; None (no change) in between. Without it (no watermark
    fetched yet) the batch decides: True when it ``filled`` at the largest size
    (``drain_batch_rows``), False when it did not fill, None for a smaller batch that
    filled. (The batch alone misleads on a busy machine: a batch that takes longer
    than its linger to read and decode does not fill although the backlog is large,
    and the other tables were let go while the first one was still draining.)"""
    if lag is not None:
        if lag >= options.drain_batch_rows:
            return True
        return False if lag < options.batch_rows else None
    if not filled:
        return False
    return True if cap >= options.drain_batch_rows else None


def _lag_of(consumer: Consumer) -> int | None:
    """Records of ``consumer``'s assigned partitions not yet returned by ``consume``:
    the high watermarks librdkafka cached from its last fetch responses minus the
    positions (no request to the broker). None when no partition has both yet."""
    try:
        parts = consumer.position(consumer.assignment())
    except Exception:  # no assignment yet, or the consumer closed: unknown
        return None
    lag, known = 0, False
    for tp in parts:
        if tp.offset < 0:
            continue
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except Exception:
            continue
        if high >= 0:
            lag += max(0, high - tp.offset)
            known = True
    return lag if known else None


class _Unavailable(Exception):
    """The database could not be reached: keep the batch and retry later."""


class _Unwritable(Exception):
    """The client could not encode the rows (orjson, a binary dumper): bad data, like a
    refusal by the database, not a connection problem."""


class TableWriter:
    """Writes batches of one ``TableSink`` into PostgreSQL (synchronous; one connection).

    ``write(rows)`` is atomic: all rows of the batch are durable when it returns.
    """

    def __init__(self, settings: Settings, spec: TableSink) -> None:
        self.settings = settings
        self.spec = spec
        self._conn: psycopg.Connection | None = None
        self._seen_duplicate = False  # the last batch had rows already stored
        self.connect_failed = False  # the last connection attempt failed (database down)
        self.direct_fallbacks = 0  # direct COPYs refused by the unique key
        schema = settings.db_schema
        cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        stg = sql.Identifier(f"_stg_{spec.name}")
        self._create_stg = sql.SQL(
            "create temp table if not exists {stg} (like {tbl} including defaults) "
            "on commit delete rows").format(stg=stg, tbl=sql.Identifier(schema, spec.table))
        self._copy = sql.SQL("copy {stg} ({cols}) from stdin (format binary)").format(
            stg=stg, cols=cols)
        self._copy_direct = sql.SQL("copy {tbl} ({cols}) from stdin (format binary)").format(
            tbl=sql.Identifier(schema, spec.table), cols=cols)
        conflict = sql.SQL(", ").join(map(sql.Identifier, spec.conflict))
        action: sql.Composable
        if spec.on_conflict == "nothing":
            action = sql.SQL("do nothing")
        else:
            others = [c for c in spec.columns if c not in spec.conflict]
            action = sql.SQL("do update set ") + sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in others)
        self._merge = sql.SQL(
            "insert into {tbl} ({cols}) select {cols} from {stg} on conflict ({conflict}) "
        ).format(tbl=sql.Identifier(schema, spec.table), cols=cols, stg=stg,
                 conflict=conflict) + action

    def _connection(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = connect(self.settings.database)
        except StorageError as exc:
            self.connect_failed = True
            raise _Unavailable(str(exc)) from exc
        self.connect_failed = False
        try:
            set_json_dumps(orjson.dumps, context=conn)
            # COPY binds by type oid (``set_types``), and bytea's oid resolves to
            # psycopg.dbapi20's Python ``BinaryBinaryDumper`` (registered after the C
            # one): two Python calls per events row. Bytes go as they are either way;
            # the C dumper of ``bytes`` takes the oid back on this connection.
            conn.adapters.register_dumper(bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))
            with conn.transaction():
                conn.execute(self._create_stg)
        except psycopg.errors.UndefinedTable as exc:
            conn.close()
            raise StorageError(
                f"sink {self.spec.name}: table {self.settings.db_schema}.{self.spec.table} "
                f"does not exist: run 'ioc db migrate' for namespace "
                f"{self.settings.namespace!r}") from exc
        except psycopg.OperationalError as exc:
            conn.close()
            raise _Unavailable(str(exc).strip()) from exc
        self._conn = conn
        return conn

    def write(self, rows: Sequence[Sequence[Any]], *, encoded: bool = False) -> int:
        """Write ``rows`` in one transaction; return how many were new.

        ``encoded``: the rows come from the spec's ``to_rows``, in its ``copy_types``
        (when it has them); otherwise they hold Python values of its ``types``.

        Raises:
            _Unavailable: the connection failed (retry later with the same rows).
            psycopg.DataError, psycopg.IntegrityError...: the database refused the data.
            _Unwritable: the rows cannot be encoded for the database (bad data too).
        """
        if self.spec.on_conflict == "update":
            # ON CONFLICT DO UPDATE refuses two rows with one key in a statement:
            # keep the last row per key (the latest figure).
            rows = list({self.spec.key_of(r): r for r in rows}.values())
        conn = self._connection()
        try:
            if self.spec.on_conflict == "nothing" and not self._seen_duplicate:
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        self._copy_rows(cur, self._copy_direct, rows, encoded)
                    self._after_write(conn, rows)
                    return len(rows)
                except psycopg.errors.UniqueViolation:
                    # A redelivery (or a row twice in the batch): merge this batch and
                    # the next few; the fast path comes back once they are all new.
                    self._seen_duplicate = True
                    self.direct_fallbacks += 1
            with conn.transaction(), conn.cursor() as cur:
                self._copy_rows(cur, self._copy, rows, encoded)
                cur.execute(self._merge)
                inserted = max(cur.rowcount, 0)
            if inserted == len(rows):
                self._seen_duplicate = False
            self._after_write(conn, rows)
            return inserted
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise _Unavailable(str(exc).strip() or type(exc).__name__) from exc
        except psycopg.Error:
            raise
        except Exception as exc:  # a row psycopg/orjson cannot encode (10**400 in jsonb...)
            self.close()  # the COPY was aborted mid-stream: start on a clean connection
            raise _Unwritable(f"{type(exc).__name__}: {exc}") from exc

    def _after_write(self, conn: psycopg.Connection, rows: Sequence[Sequence[Any]]) -> None:
        # The spec's hook, after the commit: the rows are durable whatever it does.
        if self.spec.after_write is not None and rows:
            self.spec.after_write(conn, self.settings, rows)

    def _copy_rows(self, cur: psycopg.Cursor[Any], statement: sql.Composed,
                   rows: Sequence[Sequence[Any]], encoded: bool) -> None:
        types = self.spec.copy_types if encoded and self.spec.copy_types else self.spec.types
        with cur.copy(statement) as cp:
            cp.set_types(list(types))
            for r in rows:
                cp.write_row(r)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


@dataclass
class _Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    # per message: (topic, partition, offset, first row index, end row index)
    spans: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next
    started: float = 0.0
    messages: list[Message] = field(default_factory=list)  # the records, for dead letters
    dead: list[tuple[Message, str, str]] = field(default_factory=list)  # (record, reason, message)
    isolate: bool = False  # the database refused the batch: write message by message
    refused_rows: int = 0


class _DeadLetterError(Exception):
    """The broker did not acknowledge every dead letter."""


class SinkStalled(StorageError):
    """A sink stopped making progress (a blocking call that did not return within
    ``SinkOptions.stall_s``, or a loop that ended without being asked to stop)."""


class _TableSinkRunner:
    """The consume -> write -> commit loop of one ``TableSink``.

    Every blocking librdkafka call (consume, commit, close, producer flush) runs in a
    worker thread (``asyncio.to_thread``; librdkafka releases the GIL), so the runners of
    several sinks share one event loop. The consumer's blocking calls hold one lock: a
    runner cancelled mid-consume must not close the consumer under the running call.
    The rebalance callback runs inside ``consume``, in that worker thread.
    """

    def __init__(self, settings: Settings, spec: TableSink, options: SinkOptions,
                 stop: asyncio.Event, pool: ThreadPoolExecutor | None = None,
                 precedence: Precedence | None = None) -> None:
        self.settings = settings
        # Shared by the runners of one run_sinks: who waits while a first table is
        # behind (None: nobody).
        self.precedence = precedence
        # The sinks' own threads (run_sinks), so a stuck call does not starve the others;
        # None: the loop's default executor.
        self.pool = pool
        self.spec = spec
        self.options = options
        self.stop = stop
        self.metrics = SinkMetrics()
        self.writer = TableWriter(settings, spec)
        self.topic = topic_name(settings.namespace, spec.topic_suffix)
        self.group = f"{settings.namespace}-sink-{spec.name}"
        self._paused = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._lock = threading.Lock()  # one blocking consumer call at a time
        self._last_error: tuple[str, float] = ("", 0.0)  # consumer error last logged, when
        self._quiet = LogThrottle(10.0)  # rejected-message lines: one per reason per 10 s
        # Progress, read by the watchdog thread of run_sinks (``doing``, ``since``): the
        # blocking calls running (a write may overlap a consume), each with its start
        # (monotonic), and when the last one ended.
        self._calls: dict[int, tuple[str, float]] = {}
        self._phase = "starting"
        self._free_since = time.monotonic()
        self.watched = False  # True from the consumer's creation to the stop
        self._membership = MembershipWatch(first_join_s=options.first_join_s,
                                           rejoin_s=options.rejoin_s)
        self._member_checked = 0.0
        self._fatal: str | None = None  # why the consumer failed for good (_consumer_error)
        self._fatal_at: float | None = None  # when the last one was replaced for that
        self._session_lost_at: float | None = None  # the last on_lost (session timed out)
        # (consumer, future) of the last memberid() read, which may still run (_member_id)
        self._member_read: tuple[Any, asyncio.Future[str | None]] | None = None
        # A first table's records not yet consumed, after the last consume (``_lag_of``;
        # None: unknown, or not a first table).
        self.lag: int | None = None
        self._lag_from = 0.0  # monotonic time from which the cached watermarks are fresh

    def _throttled(self, reason: str, msg: str, *args: Any) -> None:
        held = self._quiet.allow(reason)
        if held is not None:
            log.error(msg + (f" ({held} more since the last line)" if held else ""), *args)

    @property
    def doing(self) -> str:
        """What the runner waits for: its oldest blocking call running ("" when none)."""
        calls = list(self._calls.values())  # read by the watchdog thread: copy first
        return min(calls, key=lambda c: c[1])[0] if calls else self._phase

    @property
    def since(self) -> float:
        """Since when (monotonic): the oldest call's start, else the last call's end."""
        calls = list(self._calls.values())
        return min(c[1] for c in calls) if calls else self._free_since

    @property
    def consumer(self) -> Consumer:
        assert self._consumer is not None, "the consumer is created by run()"
        return self._consumer

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)``, a blocking consumer call, in a worker thread."""
        def locked() -> _T:
            with self._lock:
                return fn(*args, **kwargs)
        return await self._thread(getattr(fn, "__name__", "consumer call"), locked)

    async def _call_bounded(self, timeout: float, fn: Callable[[], _T]) -> _T:
        """``_call(fn)`` that waits at most ``timeout`` seconds (TimeoutError)."""
        lock = self._lock

        def locked() -> _T:
            with lock:
                return fn()
        return await self._thread(getattr(fn, "__name__", "consumer call"), locked,
                                  timeout=timeout)

    async def _thread(self, what: str, fn: Callable[..., _T], *args: Any,
                      timeout: float | None = None) -> _T:
        """``fn(*args)`` in a worker thread, its start and end recorded for the watchdog.

        Raises:
            TimeoutError: ``timeout`` seconds passed; the call still runs in its thread.
        """
        token = object()
        self._calls[id(token)] = (what, time.monotonic())
        try:
            fut = asyncio.get_running_loop().run_in_executor(
                self.pool, functools.partial(fn, *args))
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        finally:
            del self._calls[id(token)]
            self._free_since = time.monotonic()

    async def run(self) -> SinkMetrics:
        from ..kafka.rdkafka import KafkaException

        consumer = self._consumer = self._new_consumer()
        self._phase, self._free_since, self.watched = "", time.monotonic(), True
        try:
            # Fail fast (clear message) if the table is missing, before consuming anything.
            try:
                await self._thread("database connect", self.writer._connection)
            except _Unavailable as exc:
                log.warning("sink %s: database unavailable at start (%s); will retry",
                            self.spec.name, exc)
            try:
                await self._call(consumer.list_topics,
                                 timeout=min(self.settings.kafka.request_timeout_s, 10.0))
            except KafkaException as exc:
                from ..errors import KafkaError
                raise KafkaError(f"sink {self.spec.name}: no Kafka broker answered at "
                                 f"{','.join(self.settings.kafka.bootstrap_servers)}: "
                                 f"{exc.args[0] if exc.args else exc}") from exc
            consumer.subscribe([self.topic], on_assign=self._on_assign, on_lost=self._on_lost)
            log.info("sink %s: %s -> %s.%s (group %s)", self.spec.name, self.topic,
                     self.settings.db_schema, self.spec.table, self.group)
            await self._consume_loop()
        finally:
            self.watched = False
            log.info("sink %s stopped: %s", self.spec.name, self.metrics.line())
            self.writer.close()
            try:
                await self._call(self.consumer.close)
            except Exception as exc:  # best effort: the offsets are committed already
                log.warning("sink %s: closing the consumer failed: %s", self.spec.name, exc)
            if self._producer is not None:
                await self._thread("dead-letter producer close", self._drop_producer)
        return self.metrics

    def _new_consumer(self) -> Consumer:
        from ..kafka.rdkafka import Consumer, KafkaException

        conf = rdkafka_conf(self.settings.kafka, "consumer")
        conf.update({
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # aiokafka's liveness bound, not librdkafka's 45 s: a killed sink's
            # partitions go to the other members (or its restart) after 10 s.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 3_000,
            # A request (an offset commit, say) queued to a stopped broker fails after
            # 30 s rather than librdkafka's 60 s: commits stay within commit_timeout_s.
            "socket.timeout.ms": 30_000,
            # A consumer that has not polled for 60 s (a call that never returns) leaves
            # the group by itself, so a replacement is not kept waiting for 300 s.
            "max.poll.interval.ms": 60_000,
        })
        if self.settings.kafka.group_instance_id:
            # static membership: a replacement consumer (or this sink restarted) takes
            # the place of the one before at once, fencing it; after a broker restart the
            # group goes on without waiting for the members it had to expire
            conf["group.instance.id"] = self.settings.kafka.group_instance_id
        try:
            return Consumer(conf)
        except KafkaException as exc:
            from ..errors import KafkaError
            raise KafkaError(f"sink {self.spec.name}: Kafka client settings refused: "
                             f"{exc.args[0] if exc.args else exc}") from exc

    def _replace_consumer(self, why: str, *, stuck: bool = True) -> None:
        """Give up the consumer and subscribe a new one.

        ``stuck``: a call of the old one never returned; it is kept referenced and never
        called again (closing or freeing it while its call still runs is not safe, and
        its close would wait for that call). Otherwise it is closed in a daemon thread
        of its own. Either way it is no longer a member of the group, so the new
        consumer takes its partitions and re-reads from the last committed offsets;
        the conflict key absorbs rows already written.
        """
        old = self._consumer
        if old is not None and stuck:
            _ABANDONED.append(old)
        elif old is not None:
            threading.Thread(target=_close_quietly, args=(old, self._lock), daemon=True,
                             name=f"sink-{self.spec.name}-close").start()
        self._lock = threading.Lock()  # a stuck call holds the old one
        self._consumer = self._new_consumer()
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_lost=self._on_lost)
        self._membership.reset()
        self.metrics.consumer_restarts += 1
        log.error("sink %s: %s; replaced the consumer of group %s (%d replacement(s) so "
                  "far; the old one %s)", self.spec.name, why, self.group,
                  self.metrics.consumer_restarts,
                  "is abandoned, not closed" if stuck else "is closed")

    async def _check_member(self) -> None:
        """Replace a consumer that polls but has been outside its group for ``rejoin_s``.

        Seen after a broker stop: consumers of the sink (and of a stage) kept polling
        with no member id and never sent a JoinGroup again (the broker's log: the
        member removed on heartbeat expiration, the group empty, nothing after).
        """
        if self._fatal is not None:
            # unusable for good (fenced, say: with static membership librdkafka's own
            # rejoin after a session timeout fences a commit still under way, librdkafka
            # issue 3437): a new consumer at once, not after the membership bound
            why, self._fatal = self._fatal, None
            now = time.monotonic()
            # right after its session timed out (on_lost): librdkafka's own rejoin, not
            # another sink with our name (OWN_REJOIN_S)
            own_rejoin, again = refenced(now, self._session_lost_at, self._fatal_at)
            if again is not None:
                # twice in a row: two live sinks with the same group.instance.id
                # fencing each other; exit (for a supervisor) rather than loop
                from ..errors import KafkaError
                raise KafkaError(f"{why}; again {again:.0f} s after the "
                                 f"last replacement: exiting")
            if not own_rejoin:
                self._fatal_at = now
            self._replace_consumer(why, stuck=False)
            return
        now = time.monotonic()
        if now - self._member_checked < 1.0:
            return
        self._member_checked = now
        member, hung = await self._member_id()
        now = time.monotonic()
        watch = self._membership
        outside = watch.overdue(bool(member), now)
        if outside is not None:
            self._replace_consumer(f"not a member of its group for {outside:.0f} s although "
                                   f"polling", stuck=hung)
        elif watch.probe_due(now):
            # Is the broker answering? The bound counts from when it does.
            consumer = self.consumer
            try:
                await self._call_bounded(
                    3.0, functools.partial(consumer.list_topics, self.topic, timeout=1.0))
            except Exception:  # KafkaException, TimeoutError: it does not answer
                watch.broker_down(time.monotonic())

    async def _member_id(self) -> tuple[str | None, bool]:
        """The consumer's member id (None: none, or closed), and whether the read hung.

        Read in a worker thread, at most one read at a time, waited for at most
        ``MEMBER_READ_S`` (while the last read still runs, no wait at all). After a
        broker stop, while a synchronous commit got no reply, ``memberid()`` on the
        event loop was seen to block it for 120 s (librdkafka asks its consumer-group
        thread for the id, as its source reads): no bounded call could time out, and
        the stall watchdog ended the sink. A read that has not returned counts as no
        member; the membership bound then replaces the consumer, abandoned, not closed.
        """
        consumer, lock = self.consumer, self._lock

        def read() -> str | None:
            # Not under the consumer's lock: a commit that hangs holding it must not hold
            # this read too. So an abandoned consumer is closed by a locked call only
            # while no read runs (_close_if_abandoned), and by a read only when it gets
            # the lock at once; otherwise it stays abandoned, never closed under a call.
            _READING.add(id(consumer))
            try:
                return consumer.memberid()
            except RuntimeError:  # closed
                return None
            finally:
                _READING.discard(id(consumer))
                if lock.acquire(blocking=False):
                    try:
                        _close_if_abandoned(consumer)
                    finally:
                        lock.release()

        pending = self._member_read
        if pending is not None and pending[0] is consumer and not pending[1].done():
            return None, True  # the last read still runs: start no other, wait no more
        fut = asyncio.get_running_loop().run_in_executor(self.pool, read)
        self._member_read = (consumer, fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), MEMBER_READ_S), False
        except TimeoutError:
            return None, True

    async def _consume_loop(self) -> None:
        """Fill batches and flush them, in offset order.

        While one batch is written (``_write_ahead``: one attempt, then its offsets are
        committed) the next one is consumed and decoded, so the sink's decoding and
        PostgreSQL's work on the COPY overlap: at most one batch in flight and one
        filling (2 x ``drain_batch_rows`` rows in memory at most: a batch that fills up
        before its linger ends doubles the next one's size up to that). A batch that needs more than one
        clean attempt (database down, rows refused, dead letters) is flushed by
        ``_flush`` with nothing else running: no consume overlaps its pausing, idling
        and rewinding, and no later batch is flushed before it succeeded.
        """
        last_report = time.monotonic()
        batch = _Batch()
        cap = self.options.batch_rows  # this batch's size: larger while behind
        inflight: tuple[_Batch, asyncio.Task[bool]] | None = None
        try:
            while not self.stop.is_set():
                if inflight is not None and inflight[1].done():
                    done, inflight = inflight, None
                    if not await self._settle(*done):
                        return  # stopping while the database is down: all stays in Kafka
                await self._check_member()
                if not batch.spans and self.precedence is not None and \
                        self._waits(time.monotonic()):
                    # A first table is behind (or settling, and this table just wrote):
                    # finish the batch written ahead (its commit holds the consumer),
                    # then wait before starting the next.
                    if inflight is not None:
                        done, inflight = inflight, None
                        if not await self._settle(*done):
                            return
                    await self._give_way()
                    if self.stop.is_set():
                        break
                consumer = self.consumer
                left = cap - len(batch.rows)
                linger_left = (self.options.linger_s - (time.monotonic() - batch.started)
                               if batch.spans else 0.2)
                if left > 0 and linger_left > 0:
                    if batch.spans:
                        msgs = await self._consume(consumer, left,
                                                   max(0.001, min(linger_left, 0.2)))
                    else:
                        msgs = await self._consume(consumer, left, None)
                        if msgs:
                            batch.started = time.monotonic()  # linger from the first message
                        elif self.precedence is not None and inflight is None and \
                                time.monotonic() >= self._lag_from and \
                                (self.lag is None or self.lag < self.options.batch_rows):
                            # Nothing left (and no commit held the consumer): caught up.
                            self.precedence.report(self.spec.name, False, pending=self.lag,
                                                   now=time.monotonic())
                    self._add(batch, msgs)
                    continue
                if self.precedence is not None:
                    # What is still to store: the records not yet consumed, this batch and
                    # the one being written (up to 2 x drain_batch_rows rows: leaving the
                    # lag alone to decide let the others go with 20,000-40,000 events
                    # unwritten, which then took 70 s beside them).
                    pending = None if self.lag is None else self.lag + len(batch.rows) + (
                        len(inflight[0].rows) if inflight is not None else 0)
                    behind = behind_after(cap, filled=left <= 0, options=self.options,
                                          lag=pending)
                    self.precedence.report(self.spec.name, behind, pending=pending,
                                           now=time.monotonic())
                cap = next_batch_rows(cap, filled=left <= 0, options=self.options)
                if inflight is not None:
                    done, inflight = inflight, None
                    if not await self._settle(*done):
                        return
                if batch.spans:
                    if batch.dead or self._paused:
                        if not await self._flush(batch):
                            return  # stopping while the database is down
                    else:
                        if self._pace_end(time.monotonic()):
                            # A first table settles: no write of ours until the pause
                            # after the others' last write is over (nothing in flight).
                            await self._give_way()
                            if self.stop.is_set():
                                break
                        if self.precedence is not None:  # the others wait for it
                            self.precedence.start_write(self.spec.name, time.monotonic())
                        inflight = (batch, asyncio.create_task(self._write_ahead(batch)))
                batch = _Batch()
                now = time.monotonic()
                if now - last_report >= self.options.report_every_s:
                    last_report = now
                    log.info("sink %s: %s", self.spec.name, self.metrics.line())
            if inflight is not None:
                done, inflight = inflight, None
                if not await self._settle(*done, retry=False):
                    return  # the later batch must not commit past this one
            if batch.spans:
                await self._flush(batch, retry=False)
        finally:
            if inflight is not None:
                inflight[1].cancel()

    async def _settle(self, batch: _Batch, task: asyncio.Task[bool], *, retry: bool = True
                      ) -> bool:
        """Wait for a ``_write_ahead``; when it could not write the batch, ``_flush`` it
        (nothing else runs meanwhile). False: stopping with the batch not written."""
        if await task:
            return True
        return await self._flush(batch, retry=retry)

    async def _write_ahead(self, batch: _Batch) -> bool:
        """One attempt at writing ``batch`` (no dead letters in it), then its offsets
        committed; runs while the loop fills the next batch. False, with nothing
        written and nothing committed, when the attempt failed in any way: the caller
        then ``_flush``es the batch (retries, isolation of refused rows, pausing)."""
        w0 = time.perf_counter()
        try:
            inserted = await self._thread("database write", functools.partial(
                self.writer.write, encoded=True), batch.rows)
        except (_Unavailable, psycopg.Error, _Unwritable):
            if self.precedence is not None:  # no longer writing: the others go on
                self.precedence.pause_after(self.spec.name, 0.0, time.monotonic())
            return False
        self._written(batch, inserted, time.perf_counter() - w0)
        await self._commit(batch)
        return True

    def _written(self, batch: _Batch, inserted: int, seconds: float) -> None:
        if self.precedence is not None:  # the others wait after it (a first table settling)
            self.precedence.pause_after(self.spec.name, seconds, time.monotonic())
        self.metrics.write_s += seconds
        self.metrics.write_seconds.observe(seconds)
        self.metrics.direct_fallbacks = self.writer.direct_fallbacks
        self.metrics.batches += 1
        self.metrics.rows_staged += len(batch.rows) - batch.refused_rows
        self.metrics.rows_inserted += inserted

    async def _consume(self, consumer: Consumer, most: int, wait_s: float | None
                       ) -> list[Message]:
        """Up to ``most`` messages of ``consumer``, waiting ``wait_s`` for them (None:
        up to 0.2 s for a first one, then what else is already fetched).

        It gives way to a call that holds the consumer: the commit of the batch written
        ahead, which may never return (librdkafka, a broker stopping; ``_commit`` bounds
        it and replaces the consumer). The lock is waited for at most 0.5 s, else no
        messages are returned, so the loop goes on and sees a replacement instead of
        waiting behind that commit until the watchdog ends the sink.
        """
        lock = self._lock
        # Only a first table's backlog is asked for (``Precedence``): two local calls
        # per partition after each consume.
        track_lag = self.precedence is not None and self.spec.name in self.precedence.first

        def locked() -> list[Message]:
            if not lock.acquire(timeout=0.5):
                return []
            msgs: list[Message] = []
            try:
                if wait_s is not None:
                    msgs = consumer.consume(most, wait_s)
                    return msgs
                msgs = consumer.consume(1, 0.2)
                if msgs and most > 1:
                    msgs.extend(consumer.consume(most - 1, 0))
                return msgs
            finally:
                if track_lag:
                    if msgs:
                        self._lag_from = 0.0  # fetched since the resume: fresh
                    self.lag = (_lag_of(consumer) if time.monotonic() >= self._lag_from
                                else None)
                lock.release()
        return await self._thread("consume", locked)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions assigned while the database is down stay paused."""
        if partitions:
            log.info("sink %s: %d partition(s) of %s assigned", self.spec.name,
                     len(partitions), self.topic)
        consumer.assign(partitions)
        if self._paused and partitions:
            consumer.pause(partitions)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: the session timed out on our side (the client unassigns
        after it); remembered to tell librdkafka's own rejoin from another sink."""
        self._session_lost_at = time.monotonic()
        log.info("sink %s: %d partition(s) of %s lost (session timed out)", self.spec.name,
                 len(partitions), self.topic)

    def _consumer_error(self, err: Any) -> None:
        """Log an error event of the consumer (one line per 10 s for a repeated error)."""
        text = str(err)
        now = time.monotonic()
        if is_fatal(err):  # replaced by the next _check_member, which logs why
            self._fatal = fatal_consumer_error(err, "its consumer", self.group)
            return
        self._membership.broker_down(now)
        if text != self._last_error[0] or now - self._last_error[1] >= 10.0:
            self._last_error = (text, now)
            log.warning("sink %s: consumer error on %s: %s", self.spec.name, self.topic, text)

    def _add(self, batch: _Batch, msgs: list[Message]) -> None:
        to_rows = self.spec.to_rows
        all_rows = batch.rows
        for m in msgs:
            err = m.error()
            if err is not None:
                self._consumer_error(err)
                continue
            self.metrics.messages += 1
            topic, part, offset = cast(str, m.topic()), cast(int, m.partition()), cast(int, m.offset())
            try:
                rows = to_rows(m.key(), m.value(), m.headers() or ())  # type: ignore[arg-type]
            except Exception as exc:  # any bytes: whatever to_rows raises is bad input
                self.metrics.messages_rejected += 1
                self._throttled("sink_unreadable", "sink %s: rejected message at %s[%d]@%d: "
                                "%s: %s", self.spec.name, topic, part, offset,
                                type(exc).__name__, exc)
                batch.dead.append((m, "sink_unreadable", f"{type(exc).__name__}: {exc}"))
                rows = ()
            batch.messages.append(m)
            start = len(all_rows)
            all_rows.extend(rows)
            batch.spans.append((topic, part, offset, start, len(all_rows)))
            batch.offsets[(topic, part)] = offset + 1

    async def _flush(self, batch: _Batch, *, retry: bool = True) -> bool:
        """Write the batch durably (retrying while the DB is down), then commit offsets."""
        delay = self.options.retry_initial_s
        down_since = None
        while True:
            w0 = time.perf_counter()
            try:
                if batch.isolate:
                    inserted = await self._thread("database write", self._write_one_by_one,
                                                   batch)
                else:
                    inserted = await self._thread("database write", functools.partial(
                        self.writer.write, encoded=True), batch.rows)
                seconds = time.perf_counter() - w0
                break
            except _Unavailable as exc:
                self.metrics.db_failures += 1
                if down_since is None:
                    down_since = self.metrics.down_since = time.monotonic()
                    log.warning("sink %s: database unavailable (%s); pausing %d partition(s), "
                                "%d row(s) held, retrying", self.spec.name, exc,
                                len(self.consumer.assignment()), len(batch.rows))
                self._pause()
                if not retry or self.stop.is_set():
                    return False
                await self._backoff(delay)
                delay = min(delay * 2, self.options.retry_max_s)
            except (psycopg.Error, _Unwritable) as exc:
                log.warning("sink %s: batch refused (%s); isolating bad messages",
                            self.spec.name, str(exc).strip())
                batch.isolate = True
        if down_since is not None:
            self.metrics.paused_s += time.monotonic() - down_since
            self.metrics.down_since = None
            if self.precedence is not None:  # the outage's backlog waits in Kafka
                self.precedence.report(self.spec.name, True)
            log.warning("sink %s: database back after %.1f s; resuming", self.spec.name,
                        time.monotonic() - down_since)
        self._written(batch, inserted, seconds)
        if batch.dead and not await self._dead_letter(batch, retry=retry):
            return False
        await self._commit(batch)
        self._resume()
        return True

    def _write_one_by_one(self, batch: _Batch) -> int:
        """Find the messages the database refuses by bisection; they become dead letters.

        One bad message among n costs about 2*log2(n) transactions instead of n.
        Raises _Unavailable like ``write`` (the whole pass is retried: idempotent).
        """
        refused: list[tuple[Message, str, str]] = []
        batch.refused_rows = 0

        def attempt(lo: int, hi: int) -> int:
            a, b = batch.spans[lo][3], batch.spans[hi - 1][4]
            if a == b:
                return 0
            try:
                return self.writer.write(batch.rows[a:b], encoded=True)
            except (psycopg.Error, _Unwritable) as exc:
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    return attempt(lo, mid) + attempt(mid, hi)
                topic, part, offset = batch.spans[lo][:3]
                reason = "sink_unwritable" if isinstance(exc, _Unwritable) else "db_refused"
                self._throttled(reason, "sink %s: %s: message at %s[%d]@%d: %s",
                                self.spec.name, reason, topic, part, offset, str(exc).strip())
                refused.append((batch.messages[lo], reason, str(exc).strip()))
                batch.refused_rows += b - a
                return 0

        inserted = attempt(0, len(batch.spans)) if batch.spans else 0
        self.metrics.messages_rejected += len(refused)
        batch.dead.extend(refused)
        return inserted

    async def _dead_letter(self, batch: _Batch, *, retry: bool) -> bool:
        """Send the batch's rejected records to ``<ns>.dlq``; True once acknowledged."""
        delay = self.options.retry_initial_s
        while True:
            try:
                await self._thread("dead-letter flush", self._send_dead_letters, batch.dead)
                for _, reason, _ in batch.dead:
                    self.metrics.dead_letters[reason] = self.metrics.dead_letters.get(reason, 0) + 1
                batch.dead.clear()
                return True
            except Exception as exc:  # broker errors: keep offsets uncommitted, retry
                log.warning("sink %s: dead-lettering %d record(s) failed (%s); retrying",
                            self.spec.name, len(batch.dead), exc)
                if self._producer is not None:
                    await self._thread("dead-letter producer close", self._drop_producer)
                if not retry or self.stop.is_set():
                    return False
                await self._idle(delay)
                delay = min(delay * 2, self.options.retry_max_s)

    def _send_dead_letters(self, dead: Sequence[tuple[Message, str, str]]) -> None:
        """Produce ``dead`` to ``<ns>.dlq`` and wait for the broker's acknowledgements
        (in a worker thread). Raises when one is missing or refused."""
        if self._producer is None:
            self._producer = acked_producer(self.settings.kafka)
        producer = self._producer
        dlq = topic_name(self.settings.namespace, "dlq")
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for m, reason, message in dead:
            headers = dead_letter_headers(
                reason, topic=m.topic() or "", partition=m.partition() or 0,
                offset=m.offset() or 0, message=message, stage=f"sink:{self.spec.name}",
                headers=cast(list[tuple[str, bytes | None]], m.headers() or []))
            while True:
                try:
                    producer.produce(dlq, value=m.value() or b"", key=m.key(),
                                     headers=cast(Any, headers), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.1)
        timeout = self.settings.kafka.request_timeout_s + 5.0
        deadline = time.monotonic() + timeout
        left = producer.flush(0.5)
        while left and time.monotonic() < deadline and not self.stop.is_set():
            left = producer.flush(0.5)  # in slices, so a stop request is not held up
        if left:
            raise _DeadLetterError(f"{left} dead letter(s) not acknowledged"
                                   + (" (stopping)" if self.stop.is_set()
                                      else f" after {timeout:.0f} s"))
        if errors:
            raise _DeadLetterError(f"{len(errors)} dead letter(s) refused: {errors[0]}")

    def _drop_producer(self) -> None:
        """Discard the dead-letter producer and whatever it still holds (worker thread)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            discard_producer(producer)

    async def _commit(self, batch: _Batch) -> None:
        from ..kafka.rdkafka import KafkaException, TopicPartition

        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = [TopicPartition(t, p, off) for (t, p), off in batch.offsets.items()
                   if (t, p) in owned]
        if not offsets:
            return
        consumer = self.consumer

        def commit() -> list[TopicPartition] | None:
            try:
                return consumer.commit(offsets=offsets, asynchronous=False)
            finally:
                _close_if_abandoned(consumer)

        try:
            # librdkafka waits for a synchronous commit's reply with no timeout, and a
            # commit sent as the broker stopped was seen to get none: a consumer that
            # never polls again, never rejoins its group (docs/reliability.md).
            done = await self._call_bounded(self.options.commit_timeout_s, commit)
            failed = [tp for tp in done or () if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except TimeoutError:
            self.metrics.commit_failures += 1
            self._replace_consumer(f"offset commit did not return within "
                                   f"{self.options.commit_timeout_s:.0f} s")
        except KafkaException as exc:
            # Rebalanced away: the new owner re-reads from the last commit and the
            # conflict key absorbs the rows we already wrote.
            self.metrics.commit_failures += 1
            log.warning("sink %s: offset commit failed (%s); rows are written, the "
                        "redelivery will be deduplicated", self.spec.name,
                        exc.args[0] if exc.args else exc)

    def _pace_end(self, now: float) -> float:
        """Until when this table waits for the pause after the last write of the tables
        that are not first (``Precedence.paced_until``); 0.0: no such wait."""
        gate = self.precedence
        return 0.0 if gate is None else gate.paced_until(self.spec.name, now)

    def _waits(self, now: float) -> bool:
        """Whether this table waits before its next batch: ``precedence`` holds it, or
        the pause after the last write of the others and its own is not over."""
        return self.precedence is not None and (
            bool(self._pace_end(now)) or self.precedence.hold(self.spec.name, now))

    async def _give_way(self) -> None:
        """Wait, partitions paused and still polling (``_idle``), while ``precedence``
        holds this table (a first table is behind: bounded, see ``Precedence``) or its
        pause after its last write lasts (a first table settling)."""
        gate = self.precedence
        if gate is None or not self._waits(time.monotonic()):
            return
        t0 = time.monotonic()
        # Settling, the waits are short and many: logged when one lasted 5 s or more.
        behind = gate.behind
        if behind:
            log.info("sink %s: waiting while %s catch(es) up", self.spec.name,
                     ", ".join(sorted(behind)))
        while not self.stop.is_set() and self._waits(now := time.monotonic()):
            end = self._pace_end(now)
            await self._idle(0.5 if behind else
                             min(0.25, max(0.01, end - now)) if end else 0.25)
        self._resume()
        waited = time.monotonic() - t0
        self.metrics.held_s += waited
        if behind or waited >= 5.0:
            log.info("sink %s: waited %.1f s; going on", self.spec.name, waited)

    def _pause(self) -> None:
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(parts)
        self._paused = True

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            # Nothing was fetched while paused: the cached high watermarks are as old as
            # the outage, and the lag they give (~0) would say "caught up" before the
            # first fetch after it (seen: the others let go for 0.5 s as the database came
            # back). Not read until messages arrive again or LAG_STALE_S has passed.
            self._lag_from = time.monotonic() + LAG_STALE_S
            self.lag = None
            parts = self.consumer.assignment()
            if parts:
                self.consumer.resume(parts)

    async def _backoff(self, seconds: float) -> None:
        """``_idle(seconds)`` between two writes while the database is down, cut short as
        soon as it accepts a connection again (tried about once a second while
        connecting is what fails): the write is retried within ~1 s of the database's
        return, not after the rest of a backoff of up to ``retry_max_s``. A database
        that accepts connections but fails the writes keeps the whole backoff."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            await self._idle(min(left, 1.0))
            if not self.writer.connect_failed or end - time.monotonic() <= 0:
                continue
            try:
                await self._thread("database connect", self.writer._connection)
            except _Unavailable:
                continue
            self.metrics.early_resumes += 1
            return

    async def _idle(self, seconds: float) -> None:
        """Wait while paused, still consuming so the group keeps us (max.poll.interval.ms)."""
        from ..kafka.rdkafka import KafkaException, TopicPartition

        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            await self._check_member()
            msgs = await self._call(self.consumer.consume, 500, max(0.001, min(left, 0.2)))
            first: dict[tuple[str, int], int] = {}
            for m in msgs:
                if m.error() is not None:
                    self._consumer_error(m.error())
                else:
                    first.setdefault((cast(str, m.topic()), cast(int, m.partition())),
                                     cast(int, m.offset()))
            self._pause()
            # A partition that delivered anyway (assigned between two pauses): rewind
            # it, so these records stay in Kafka until the write succeeds.
            for (topic, part), offset in first.items():
                try:
                    self.consumer.seek(TopicPartition(topic, part, offset))
                except KafkaException as exc:
                    log.warning("sink %s: could not rewind %s[%d] to %d: %s",
                                self.spec.name, topic, part, offset, exc)


def _close_quietly(consumer: Any, lock: threading.Lock | None = None) -> None:
    """Close a replaced consumer (in a thread of its own): after the call that holds
    ``lock`` (its lock) returns, and once no member-id read of it runs (given up after
    60 s: it then stays open, never closed under a running call)."""
    try:
        if lock is not None:
            lock.acquire()
        try:
            deadline = time.monotonic() + 60.0
            while id(consumer) in _READING:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
            consumer.close()
        finally:
            if lock is not None:
                lock.release()
    except Exception as exc:
        log.debug("closing a replaced consumer: %r", exc)


def _close_if_abandoned(consumer: Any) -> None:
    """After a call of ``consumer`` returned (in its thread): close the consumer if it was
    given up meanwhile (best effort; it is no longer a member of its group)."""
    if id(consumer) in _READING:
        return  # its member-id read still runs: that read closes it (_member_id)
    for i, c in enumerate(_ABANDONED):
        if c is consumer:
            del _ABANDONED[i]
            try:
                consumer.close()
            except Exception as exc:
                log.debug("closing an abandoned consumer: %r", exc)
            return


def abandoned_consumers() -> int:
    """How many consumers this process gave up whose stuck call has not returned yet."""
    return len(_ABANDONED)


def _stalled(runners: Sequence[_TableSinkRunner], stall_s: float, now: float) -> str | None:
    """What is wrong, if a watched runner made no progress for ``stall_s``."""
    for r in runners:
        if r.watched and now - r.since > stall_s:
            return (f"sink {r.spec.name}: {r.doing or 'its loop'} has not returned for "
                    f"{now - r.since:.0f} s (limit {stall_s:.0f} s); a consumer that does "
                    f"not poll cannot rejoin its group ({r.group})")
    return None


def _watchdog(runners: Sequence[_TableSinkRunner], options: SinkOptions,
              done: threading.Event, on_stall: Callable[[str], None]) -> None:
    """Thread: calls ``on_stall(reason)`` once, when a runner made no progress for
    ``options.stall_s``. A thread, not a task: it must see a blocked event loop too."""
    every = max(0.05, min(1.0, options.stall_s / 10))
    while not done.wait(every):
        reason = _stalled(runners, options.stall_s, time.monotonic())
        if reason is not None:
            on_stall(reason)
            return


def exit_on_stall(reason: str) -> None:
    """What ``ioc sink`` does with a stuck sink: log why, dump every thread's stack to
    stderr and exit with code 70 at once, so a supervisor starts a fresh process (the
    stuck call cannot be interrupted, and a clean stop would wait for it). Nothing is
    lost: offsets are committed only after the rows are durable."""
    import faulthandler
    import os
    import sys

    log.critical("%s: exiting (code 70) so that a supervisor restarts the sink; "
                 "thread stacks follow", reason)
    with contextlib.suppress(Exception):
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    logging.shutdown()
    os._exit(70)


async def run_sinks(settings: Settings, specs: Sequence[TableSink],
                    options: SinkOptions | None = None,
                    stop: asyncio.Event | None = None,
                    on_stall: Callable[[str], None] | None = None,
                    on_start: Callable[[Sequence[Any]], None] | None = None,
                    ) -> list[SinkMetrics]:
    """Run one consume/write loop per spec until ``stop`` is set (or SIGTERM/SIGINT).

    ``on_start(runners)`` is told the runners once they exist (``ioc.metrics.sink``
    reads their ``metrics``, ``spec``, ``group`` and ``topic`` at scrape time).

    A watchdog thread checks that every runner makes progress: a blocking call that
    has not returned within ``options.stall_s`` calls ``on_stall(reason)`` (``ioc sink``
    passes ``exit_on_stall``); without ``on_stall``, ``run_sinks`` raises
    ``SinkStalled``. A runner that fails takes ``run_sinks`` down with its exception;
    one that ends without being asked to stop raises ``SinkStalled``: never a sink
    that runs on with a table no longer written.

    Raises:
        StorageError: a target table is missing (run ``ioc db migrate``).
        KafkaError: the broker cannot be reached at start.
        SinkStalled: a runner stalled or ended on its own (see above).
    """
    options = options or SinkOptions()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    # The spares stand in for the threads of calls that never returned (replaced
    # consumers).
    # A runner has up to two calls in threads at a time (a write overlapping a consume).
    pool = ThreadPoolExecutor(max_workers=3 * len(specs) + 2, thread_name_prefix="sink")
    names = {s.name for s in specs}
    precedence = (Precedence(names & set(options.first_tables), options.first_hold_s,
                             settle_s=options.first_settle_s,
                             settle_rows=max(1, options.batch_rows // 2),
                             settle_duty=options.first_settle_duty)
                  if names & set(options.first_tables) else None)
    runners = [_TableSinkRunner(settings, s, options, stop, pool, precedence) for s in specs]
    if on_start is not None:
        on_start(runners)
    tasks = [asyncio.create_task(r.run(), name=f"sink-{r.spec.name}") for r in runners]
    stalled: asyncio.Future[str] = loop.create_future()

    def settle(reason: str) -> None:  # in the loop
        if not stalled.done():
            stalled.set_result(reason)

    def report(reason: str) -> None:  # watchdog thread
        if on_stall is not None:
            on_stall(reason)
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop.call_soon_threadsafe(settle, reason)

    done = threading.Event()
    watchdog = threading.Thread(target=_watchdog, args=(runners, options, done, report),
                                name="sink-watchdog", daemon=True)
    watchdog.start()
    try:
        pending: set[asyncio.Future[Any]] = {*tasks, stalled}
        while True:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if stalled in finished:
                raise SinkStalled(stalled.result())
            for t in finished:
                t.result()  # a runner that failed: its exception
                if not stop.is_set():
                    name = t.get_name() if isinstance(t, asyncio.Task) else "?"
                    raise SinkStalled(f"{name} ended without being asked to stop")
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
    finally:
        done.set()
        stop.set()
        for t in tasks:
            t.cancel()
        stalled.cancel()
        # Let the cancelled runners close their consumers (not one that is stuck).
        await asyncio.wait(tasks, timeout=15.0)
        pool.shutdown(wait=False)
