"""``Publisher``: send city events to Kafka from Python, validated and acknowledged.

    with Publisher(settings, source="air-sensors") as pub:
        pub.send({"id": "a1", "type": "air.quality", "entity": "s-12",
                  "time": "2025-03-01T10:00:00+01:00", "values": {"pm25": 14.2}})
        result = pub.send_many(batch)   # result.accepted / result.rejected

Built on kafka-python's producer with idempotence on and ``acks=all``: the broker
de-duplicates producer retries, and ``send``/``send_many`` return only after every
accepted event is acknowledged by the in-sync replicas. Events go to
``<ns>.events.raw`` (the validate agent re-checks them there). ``send_many`` packs
events into JSON-array records of up to 1,000 events / 900 KiB (see
``ioc.events.split_raw``): kafka-python costs ~100 µs per record on this machine, so
one record per event would cap a publisher near 7,000 events/s. Records are keyed by
source, as the topic catalogue says: a publisher's events are validated in order.
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
from .kafka.clients import kafka_python_kwargs
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
    """Close a kafka-python producer within about a second, whatever it still holds.

    ``close`` flushes first and raises ``KafkaTimeoutError`` while batches are pending
    (the broker is away), leaving the producer open: its ``__del__`` then closes it
    again and prints that error's traceback on stderr. So when a short close fails,
    the pending batches are aborted (they are resent by the caller: nothing is lost)
    and the producer closed for good.
    """
    from .kafka.kafka_python import KafkaError as _KE

    try:
        producer.close(timeout=0.5)
        return
    except _KE as exc:  # pending batches the broker did not take
        log.debug("publisher: closing the old producer: %r; aborting what it holds", exc)
    except Exception as exc:  # it failed already
        log.debug("publisher: closing the old producer: %r", exc)
    try:  # kafka-python's own force-close path (KafkaProducer.close has no force flag)
        producer._sender.force_close()
        producer._accumulator.abort_incomplete_batches()
        producer.close(timeout=0)
    except Exception as exc:
        log.debug("publisher: force-closing the old producer: %r", exc)


class Publisher:
    """A validating, idempotent Kafka producer for events.

    Args:
        settings: where the broker is, and the namespace.
        source: fill ``source`` in events that lack it; when set, events naming another
            source are rejected (reason ``source_mismatch``).
        linger_ms: how long the producer waits to fill a batch.
        batch_size: producer batch size in bytes.
        ack_timeout_s: how long ``send``/``send_many`` wait for acknowledgements.
        compression: ``None``, ``gzip``, ``lz4``, ``zstd``... (kafka-python names).

    Raises:
        KafkaError: no broker answered.
    """

    def __init__(self, settings: Settings, *, source: str | None = None, linger_ms: int = 5,
                 batch_size: int = 256 * 1024, ack_timeout_s: float = 30.0,
                 compression: str | None = None) -> None:
        self.settings = settings
        self.source = source
        self.topic = topic_name(settings.namespace, "events.raw")
        self.ack_timeout_s = ack_timeout_s
        self._options = {"linger_ms": linger_ms, "batch_size": batch_size,
                         "compression_type": compression}
        self._producer: Any = self._new_producer()

    def _new_producer(self) -> Any:
        from .kafka.kafka_python import KafkaError as _KE
        from .kafka.kafka_python import KafkaProducer

        try:
            # max_block_ms: send() waits for metadata at most ack_timeout_s (60 s by
            # default, while the broker is away), as the contract of send/send_many says
            return KafkaProducer(acks="all", enable_idempotence=True,
                                 max_in_flight_requests_per_connection=5,
                                 max_block_ms=max(1, int(self.ack_timeout_s * 1000)),
                                 **self._options, **kafka_python_kwargs(self.settings.kafka))
        except _KE as exc:
            raise KafkaError(f"publisher: no Kafka broker answered at "
                             f"{','.join(self.settings.kafka.bootstrap_servers)}: {exc}") from exc

    def _drop_producer(self) -> None:
        """Drop the producer after unacknowledged sends; the next send makes a new one.

        An idempotent kafka-python producer whose batches expired while the broker was
        away can keep timing out after the broker is back (seen in the demo: every
        resend failed for minutes); a new producer id starts clean.
        """
        old, self._producer = self._producer, None
        if old is not None:
            _close_now(old)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending and close the producer."""
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)

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
        self._wait([(1, [e.id], self._send(e))])

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
        futures = []
        for source, evs in by_source.items():
            for record, chunk in chunk_events(evs):
                fut = self._send_record(source.encode(), record, len(valid))
                futures.append((len(chunk), [e.id for e in chunk], fut))
        result.accepted.extend(self._wait(futures))
        return result

    def _send(self, e: Event) -> Any:
        return self._send_record(e.source.encode(), encode_event(e), 1)

    def _send_record(self, key: bytes, value: bytes, total: int) -> Any:
        """``send`` one record; a send that fails (no metadata within ``ack_timeout_s``
        while the broker is away, a full buffer) drops the producer and raises our
        ``KafkaError``, as an unacknowledged batch does."""
        from .kafka.kafka_python import KafkaError as _KE

        try:
            return self._live().send(self.topic, key=key, value=value)
        except _KE as exc:
            self._drop_producer()
            raise KafkaError(f"{total} event(s) not sent to topic {self.topic}: "
                             f"{type(exc).__name__}: {exc}; resending is safe") from exc

    def _wait(self, futures: list[tuple[int, Any, Any]]) -> list[str]:
        from .kafka.kafka_python import KafkaError as _KE

        if not futures:
            return []
        # One deadline for the whole batch: the flush and then the futures share
        # ack_timeout_s (each future waited for ack_timeout_s again after a flush that
        # had timed out: a batch sent as the broker stopped took twice as long to fail,
        # and to be resent once it was back).
        deadline = time.monotonic() + self.ack_timeout_s
        try:
            self._live().flush(timeout=self.ack_timeout_s)
        except _KE as exc:  # e.g. KafkaTimeoutError: the futures below say which failed
            log.warning("publisher: flush did not complete: %s", exc)
        ok: list[str] = []
        failed: list[tuple[str, str]] = []
        total = sum(n for n, _, _ in futures)
        for _n, ids, fut in futures:
            try:
                fut.get(timeout=0.001 if fut.is_done
                        else max(0.001, deadline - time.monotonic()))
                ok.extend(ids)
            except (_KE, TimeoutError) as exc:
                failed.extend((i, f"{type(exc).__name__}: {exc}") for i in ids)
        if failed:
            self._drop_producer()
            raise KafkaError(
                f"{len(failed)} of {total} event(s) were not acknowledged by the broker "
                f"for topic {self.topic} within {self.ack_timeout_s:.0f} s (first: id "
                f"{failed[0][0]!r}: {failed[0][1]}); resending is safe")
        return ok
