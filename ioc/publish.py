"""``Publisher``: send city events to Kafka from Python, validated and acknowledged.

    with Publisher(settings, source="air-sensors") as pub:
        pub.send({"id": "a1", "type": "air.quality", "entity": "s-12",
                  "time": "2025-03-01T10:00:00+01:00", "values": {"pm25": 14.2}})
        result = pub.send_many(batch)   # result.accepted / result.rejected

Built on librdkafka (confluent-kafka) with idempotence on and ``acks=all``: the broker
de-duplicates producer retries, and ``send``/``send_many`` return only after every
accepted event is acknowledged by the in-sync replicas. Events go to
``<ns>.events.raw`` (the validate agent re-checks them there). ``send_many`` packs
events into JSON-array records of up to 1,000 events / 900 KiB (see
``ioc.events.split_raw``): fewer records, less per-record cost in the client and the
broker. Records are keyed by source, as the topic catalogue says: a publisher's events
are validated in order.

It was kafka-python's producer until session 16: while the broker was away, that
producer spun a core whenever it held records for partitions whose leader it did not
know (it asked for new metadata on every pass of its loop, and each request woke the
loop again; docs/reliability.md, "Python clients that spin while the broker is away").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .errors import InvalidEvent, KafkaError
from .events import Event, chunk_events, encode_event, validate_event
from .kafka.clients import check_broker, rdkafka_conf
from .topics import topic_name

log = logging.getLogger(__name__)

__all__ = ["PublishResult", "Publisher", "Rejected"]


@dataclass(frozen=True)
class Rejected:
    """One event that was not sent: its position, id (if any), reason and message."""

    index: int
    id: str | None
    reason: str
    message: str
    field: str | None = None


@dataclass
class PublishResult:
    """What ``send_many`` did: ids acknowledged by the broker, and rejections."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def _close_now(producer: Any) -> None:
    """Drop a librdkafka producer at once: what it still holds is purged (the caller
    resends it: nothing is lost) and its delivery reports are served."""
    try:
        producer.purge()
        producer.flush(0)
    except Exception as exc:  # it failed already
        log.debug("publisher: closing the old producer: %r", exc)


class _Acks:
    """The delivery reports of one batch: records still unacknowledged, and failures."""

    __slots__ = ("failed", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.failed: list[str] = []

    def report(self, err: Any, _msg: Any) -> None:
        self.pending -= 1
        if err is not None:
            self.failed.append(str(err))


class Publisher:
    """A validating, idempotent Kafka producer for events.

    Args:
        settings: where the broker is, and the namespace.
        source: fill ``source`` in events that lack it; when set, events naming another
            source are rejected (reason ``source_mismatch``).
        linger_ms: how long the producer waits to fill a batch.
        batch_size: producer batch size in bytes.
        ack_timeout_s: how long ``send``/``send_many`` wait for acknowledgements.
        compression: ``None``, ``gzip``, ``snappy``, ``lz4``, ``zstd``.

    Raises:
        KafkaError: no broker answered (within ``ack_timeout_s``, at most
            ``kafka.request_timeout_s``).
    """

    def __init__(self, settings: Settings, *, source: str | None = None, linger_ms: int = 5,
                 batch_size: int = 256 * 1024, ack_timeout_s: float = 30.0,
                 compression: str | None = None) -> None:
        self.settings = settings
        self.source = source
        self.topic = topic_name(settings.namespace, "events.raw")
        self.ack_timeout_s = ack_timeout_s
        self._options = {"linger.ms": linger_ms, "batch.size": batch_size,
                         "compression.type": compression or "none"}
        self._producer: Any = self._new_producer()

    def _conf(self) -> dict[str, Any]:
        conf = rdkafka_conf(self.settings.kafka, "producer")
        conf.update(self._options)
        conf.update({
            "enable.idempotence": True, "acks": "all",
            # a record not acknowledged within ack_timeout_s fails (and is resent by the
            # caller), so nothing of a failed batch lingers in the producer
            "message.timeout.ms": max(1, int(self.ack_timeout_s * 1000)),
            # a lost connection is tried again at least every second (the default
            # backs off to 10 s)
            "reconnect.backoff.max.ms": 1000,
            "queue.buffering.max.messages": 100_000,
        })
        return conf

    def _new_producer(self) -> Any:
        from .kafka.rdkafka import Producer

        producer = Producer(self._conf())
        try:
            check_broker(producer, self.settings.kafka, self.topic, max(
                0.1, min(self.ack_timeout_s, self.settings.kafka.request_timeout_s)),
                "publisher: ")
        except KafkaError:
            _close_now(producer)
            raise
        return producer

    def _drop_producer(self) -> None:
        """Drop the producer after unacknowledged sends; the next send makes a new one
        (a new producer id: nothing of the failed batch is still pending anywhere)."""
        old, self._producer = self._producer, None
        if old is not None:
            _close_now(old)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending (at most ``timeout_s``) and close the producer."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            if producer.flush(timeout_s):
                _close_now(producer)

    def _live(self) -> Any:
        """The producer, made anew after ``_drop_producer`` (KafkaError: no broker yet)."""
        if self._producer is None:
            self._producer = self._new_producer()
        return self._producer

    def prepare(self, event: Event | Mapping[str, Any] | bytes) -> Event:
        """Validate one event (filling ``source``); InvalidEvent when it is not valid."""
        if isinstance(event, Event):
            raw: Any = {f: getattr(event, f) for f in Event.__struct_fields__}
        elif isinstance(event, bytes):
            import orjson

            try:
                raw = orjson.loads(event)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent("not_json", f"not_json: {exc}") from exc
        else:
            raw = dict(event)
        if self.source is not None and isinstance(raw, dict):
            got = raw.setdefault("source", self.source)
            if got != self.source:
                raise InvalidEvent("source_mismatch", f"source_mismatch at source: this "
                                   f"publisher sends for {self.source!r}, event says {got!r}",
                                   field="source")
        return validate_event(raw)

    def send(self, event: Event | Mapping[str, Any] | bytes) -> None:
        """Validate and send one event; return once the broker has acknowledged it.

        Raises:
            InvalidEvent: the event is not valid (nothing was sent).
            KafkaError: the broker did not acknowledge within ``ack_timeout_s``.
        """
        e = self.prepare(event)
        acks = _Acks()
        self._send_record(e.source.encode(), encode_event(e), 1, acks)
        self._wait([[e.id]], acks, 1)

    def send_many(self, events: Iterable[Event | Mapping[str, Any] | bytes]) -> PublishResult:
        """Validate and send a batch; return after every valid one is acknowledged.

        Invalid events are not sent; they are listed in ``result.rejected``.

        Raises:
            KafkaError: some valid events were not acknowledged (the message says how
                many); resending the batch is safe, the sink de-duplicates on the id.
        """
        result = PublishResult()
        valid: list[Event] = []
        for i, ev in enumerate(events):
            try:
                valid.append(self.prepare(ev))
            except InvalidEvent as exc:
                eid = ev.get("id") if isinstance(ev, Mapping) else getattr(ev, "id", None)
                result.rejected.append(Rejected(i, eid if isinstance(eid, str) else None,
                                                exc.reason, str(exc), exc.field))
        by_source: dict[str, list[Event]] = {}
        for e in valid:
            by_source.setdefault(e.source, []).append(e)
        records: list[list[str]] = []
        acks = _Acks()
        for source, evs in by_source.items():
            for record, chunk in chunk_events(evs):
                self._send_record(source.encode(), record, len(valid), acks)
                records.append([e.id for e in chunk])
        result.accepted.extend(self._wait(records, acks, len(valid)))
        return result

    def _send_record(self, key: bytes, value: bytes, total: int, acks: _Acks) -> None:
        """``produce`` one record, its delivery report to ``acks``. A full local queue
        is waited out (serving delivery reports) for at most ``ack_timeout_s``; then,
        or when the producer refuses the record, the producer is dropped and our
        ``KafkaError`` raised, as for an unacknowledged batch."""
        from .kafka.rdkafka import KafkaException

        deadline = time.monotonic() + self.ack_timeout_s
        producer = self._live()
        while True:
            try:
                producer.produce(self.topic, value=value, key=key, on_delivery=acks.report)
                acks.pending += 1
                return
            except BufferError as exc:  # the local queue is full: wait for deliveries
                if time.monotonic() < deadline:
                    producer.poll(0.05)
                    continue
                error: Exception = exc
            except KafkaException as exc:
                error = exc
            self._drop_producer()
            raise KafkaError(f"{total} event(s) not sent to topic {self.topic}: "
                             f"{type(error).__name__}: {error}; resending is safe") from error

    def _wait(self, records: list[list[str]], acks: _Acks, total: int) -> list[str]:
        """Wait for the batch's delivery reports, ``ack_timeout_s`` in all (the records
        themselves time out then too: ``message.timeout.ms``)."""
        if not records:
            return []
        deadline = time.monotonic() + self.ack_timeout_s
        producer = self._live()
        while acks.pending > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            producer.flush(min(left, 1.0))
        if acks.pending > 0 or acks.failed:
            self._drop_producer()
            first = acks.failed[0] if acks.failed else "no acknowledgement"
            raise KafkaError(
                f"{acks.pending + len(acks.failed)} of {len(records)} record(s) "
                f"({total} event(s)) were not acknowledged by the broker for topic "
                f"{self.topic} within {self.ack_timeout_s:.0f} s (first: {first}); "
                f"resending is safe")
        return [i for ids in records for i in ids]
