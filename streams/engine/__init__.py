"""Batch stages: the event-rate agents on librdkafka consumers, hosted by the Faust worker.

Faust's per-message path (consumer-thread hand-off, one ``Event`` and one ack per
record, the stream iterator) capped a worker at ~1,300-1,750 events/s on this 2-core
machine however the agent batched its own work (docs/performance.md). The agents that
see every event (validate, aggregate, kpis, rules) and the tiles agent therefore run as
*stages*: each started and stopped with the Faust worker (so ``ioc worker`` and the app
factory are unchanged), with a consumer and a producer of its own (confluent-kafka:
librdkafka moves a record for a seventh of aiokafka's CPU, docs/dependencies.md), in a
thread of its own running this loop::

    records = consumer.consume(max batch_max, waiting at most within_s)
    stage.process(records, outbox)         (pure work; outputs go to the outbox)
    stage.tick(now, outbox)                (timers: throttled updates, absence checks)
    outbox.send(producer)                  (produce the outputs, then flush: wait for
                                            every acknowledgement; retry with backoff and
                                            a new producer while the broker refuses)
    every commit_every_s (1 s):            the states changed since the last commit go to
                                            their changelogs (acknowledged likewise), then
                                            consumer.commit(offsets processed so far)

Stages of one app that read the same topics share one consumer and loop (``combine``).
Those that read ``<ns>.events`` (aggregate, kpis, rules, scorecards) are made with
``Stage.of_events``: their work is ``process_events(records, events, out)``, and the
composite decodes each batch once (``decode_events``) and hands the same list to each; a
stage run alone (a unit test, a bench) decodes for itself.

librdkafka's blocking calls release the GIL, so the stages' Kafka I/O runs beside the
Faust event loop, and the rebalance callbacks (state restore, final commit) run in the
stage's own thread, between two batches.

State lives in ``StateTable``s: a dict per stage whose changed entries are written,
at each commit (after the outputs they led to), to a compacted changelog topic
``<ns>.state.<app>.<table>`` in the partition of the source record (so a partition's
state moves with it): one record per changed key per commit, however many batches
changed it. When partitions are assigned, the table is rebuilt before any record of
theirs is fetched: from a local snapshot of the partition (``streams.engine.snapshot``, which
remembers the changelog offset it includes) and the changelog's tail after it, or from
the whole changelog when there is no usable snapshot. Assignment is incremental
(cooperative-sticky): a rebalance revokes and assigns only the partitions that move, so
the partitions a stage keeps are neither paused nor restored and it goes on processing
them through the rebalance. When partitions are revoked, the batch in flight is flushed
and committed and those partitions snapshotted (a worker on the same host that takes them
over reads only the changelog's tail); their state stays in memory until the next
assignment, which keeps those it gets back whose changelog nobody wrote since and drops
the rest. Snapshots are also written after a checkpoint, at most every ``snapshot_every_s``
(30 s), for the partitions written since, and when the stage stops. The states remember the
last applied (partition, offset) so records redelivered after a crash (kill -9 between
a flush and its commit) are skipped, not counted twice: exactly-once totals over
at-least-once Kafka, as with the Faust tables this replaces.

Bounded: a batch is at most ``batch_max`` records; the outbox holds one batch's
outputs; while a flush is refused the stage fetches nothing more (the rest waits in
Kafka).

Bad input is the stage's business: a record it cannot decode becomes a dead letter
(``ioc.events.dead_letter_headers``) in its ``process``. Anything ``process`` still
raises is taken for a bug of our own, and must neither stop the worker nor loop (a
restart would read the same record and fail again). The runner then *rewinds*: the
batch's outputs are discarded, the states go back to the last commit (the partitions
are dropped and restored from their changelogs, as after a rebalance) and the
consumer seeks back to the committed offsets; it re-reads from there *record by
record*, each in a transaction of the tables (``StateTable.begin``/``rollback``: the
stage works on copies of the states, so a record that fails half-way leaves nothing
behind). A record that raises again goes to ``<ns>.dlq`` with reason
``internal_error`` (exception type and where it was raised in ``dlq.message``), is
counted (``StageMetrics.internal_errors``) and logged (throttled); the stage goes on.
It stays record by record until it has passed the failing batch and
``careful_s`` passed without another failure. A failing ``tick`` is counted
(``tick_errors``), its outputs discarded, and logged (throttled). docs/reliability.md.
"""

from .applied import Applied, Tracked, apply_once
from .records import (
           Headers,
           Outbox,
           Record,
           SendFailed,
           TopicPartition,
           decode_events,
           key_partition,
)
from .runner import StageRunner, host_stage
from .stage import EventsProcess, Stage, StageMetrics, combine
from .table import StateTable

__all__ = ["Applied", "EventsProcess", "Headers", "Outbox", "Record", "SendFailed", "Stage",
           "StageMetrics", "StageRunner", "StateTable", "TopicPartition", "Tracked", "apply_once",
           "combine", "decode_events", "host_stage", "key_partition"]
