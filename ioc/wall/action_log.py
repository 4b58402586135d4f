"""Where operator actions are stored: the ``<ns>.alerts.actions`` topic (or memory).

Every wall replica reads every partition of the topic from the beginning (no consumer
group, like the tiles topic), folds each record into its :class:`~.desk.OperatorDesk`,
then follows; so an action made on one replica reaches the screens of all of them, and
a restarted replica rebuilds the workflow state. An action is applied when it is read
back, not when it is sent: every replica folds the same records in the same partition
order (key: alert id), so they agree. ``ioc sink`` writes the same records to the
``alert_actions`` audit table (:mod:`._storage`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..config import Settings
from ..errors import InvalidRecord, KafkaError
from ..kafka import aiokafka_kwargs
from ..topics import spec
from ._logs import LogThrottle
from .workflow import ActionRecord

__all__ = ["ActionLog", "KafkaActionLog", "MemoryActionLog"]

log = logging.getLogger(__name__)

OnRecord = Callable[[ActionRecord], None]


class ActionLog:
    """Stores action records and hands every stored record to ``on_record``."""

    ready: asyncio.Event

    async def run(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def publish(self, rec: ActionRecord) -> None:  # pragma: no cover - interface
        """Store ``rec``; returns once it is durable. Raises KafkaError or TimeoutError."""
        raise NotImplementedError


class MemoryActionLog(ActionLog):
    """No persistence (``WallServer(kafka=False)``: tests, bench): folded at once."""

    def __init__(self, on_record: OnRecord) -> None:
        self.on_record = on_record
        self.ready = asyncio.Event()
        self.ready.set()
        self.records: list[ActionRecord] = []

    async def run(self) -> None:
        await asyncio.Future()

    async def publish(self, rec: ActionRecord) -> None:
        self.records.append(rec)
        self.on_record(rec)


class KafkaActionLog(ActionLog):
    """The actions topic through aiokafka: an idempotent producer and an all-partition reader.

    ``ready`` is set once the records present at start are folded. A record that is
    not an action record is skipped and counted in ``undecodable`` (no record stops it).
    """

    def __init__(self, settings: Settings, on_record: OnRecord, *,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_record = on_record
        self.topic = spec("alerts.actions").name(settings.namespace)
        self.ready = asyncio.Event()
        self.undecodable = 0
        self.fold_errors = 0
        self.rebuilt_records = 0
        self.published = 0
        self._on_ready = on_ready
        self._producer: Any = None
        self._started = asyncio.Event()
        self._log = LogThrottle(log, every_s=settings.wall.log_every_s)

    async def run(self) -> None:
        """Start the producer, rebuild, then follow until cancelled.

        Raises:
            KafkaError: the broker is unreachable or the topic does not exist.
        """
        from ..kafka.aio import AIOKafkaConsumer, AIOKafkaProducer, assign_from_beginning
        from ..kafka.aio import KafkaError as AKError

        kw = aiokafka_kwargs(self.settings.kafka)
        producer = AIOKafkaProducer(**kw, acks="all", enable_idempotence=True, linger_ms=0)
        consumer = AIOKafkaConsumer(**kw, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50)
        try:
            await producer.start()
            await consumer.start()
        except AKError as exc:
            await producer.stop()
            raise KafkaError(f"wall: cannot reach Kafka at "
                             f"{','.join(self.settings.kafka.bootstrap_servers)}: {exc}") from exc
        self._producer = producer
        self._started.set()
        try:
            tps, end = await assign_from_beginning(consumer, self.topic,
                                                   self.settings.namespace)
            pending = {tp for tp in tps if end[tp] > 0}
            if not pending:
                self._set_ready()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, records in batches.items():
                    for rec in records:
                        self.apply_record(rec.value, tp.partition, rec.offset)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        self._set_ready()
        finally:
            self._producer = None
            await consumer.stop()
            await producer.stop()

    def _set_ready(self) -> None:
        self.ready.set()
        log.info("wall: folded %d action record(s) from %s", self.rebuilt_records, self.topic)
        if self._on_ready:
            self._on_ready()

    def apply_record(self, value: bytes | None, partition: int, offset: int) -> str:
        """Fold one record; never raises. ``"folded"``, ``"undecodable"`` or ``"fold_error"``."""
        if not self.ready.is_set():
            self.rebuilt_records += 1
        try:
            rec = ActionRecord.from_bytes(value)
        except InvalidRecord as exc:
            self.undecodable += 1
            self._log.log(logging.WARNING, "action_undecodable", "wall: skipping %s[%d]@%d: %s",
                          self.topic, partition, offset, exc)
            return "undecodable"
        try:
            self.on_record(rec)
        except Exception:
            self.fold_errors += 1
            self._log.log(logging.ERROR, "action_fold_error", "wall: skipping %s[%d]@%d: "
                          "folding it failed", self.topic, partition, offset, exc_info=True)
            return "fold_error"
        return "folded"

    async def publish(self, rec: ActionRecord) -> None:
        if self._producer is None:
            raise KafkaError(f"wall: the producer of {self.topic} is not running")
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self.topic, rec.to_bytes(), key=rec.key),
                self.settings.wall.action_timeout_s)
        except TimeoutError:
            raise
        except Exception as exc:
            raise KafkaError(f"wall: storing action {rec.id} in {self.topic} failed: {exc}") from exc
        self.published += 1
