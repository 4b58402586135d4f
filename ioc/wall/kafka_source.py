"""Feed the tile store from the compacted ``<ns>.wall.tiles`` topic, with aiokafka.

Why aiokafka: the wall server is one asyncio event loop that owns the tile store; an
async consumer in that loop hands tiles to the store without a thread, a cross-thread
queue or locks. Each server assigns itself every partition (no consumer group), reads
from the beginning to rebuild the latest version of each tile, then follows live; so
any number of replicas run side by side and each has all tiles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..config import Settings
from ..errors import KafkaError
from ..kafka import aiokafka_kwargs
from ..tiles import TileDecodeError, decode_tile
from ..topics import spec
from ._logs import LogThrottle
from .state import TileStore

__all__ = ["KafkaTileSource"]

log = logging.getLogger(__name__)


class KafkaTileSource:
    """Reads every partition of the tiles topic into ``store``.

    ``ready`` is set once the rebuild has reached the end offsets seen at start. A
    record that is not a tile is skipped and counted (:meth:`apply_record`); no record
    stops the source.
    """

    def __init__(self, settings: Settings, store: TileStore, *,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.topic = spec("wall.tiles").name(settings.namespace)
        self.ready = asyncio.Event()
        self.rebuilt_records = 0
        self._on_ready = on_ready
        self._consumer = None  # type: ignore[var-annotated]
        self._log = LogThrottle(log, every_s=settings.wall.log_every_s)

    async def run(self) -> None:
        """Rebuild, then follow until cancelled.

        Raises:
            KafkaError: the broker is unreachable or the topic does not exist.
        """
        from ..kafka.aio import AIOKafkaConsumer, assign_from_beginning
        from ..kafka.aio import KafkaError as AKError

        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Camera tiles carry JPEGs; the topic allows 4 MiB messages.
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        try:
            await consumer.start()
        except AKError as exc:
            raise KafkaError(f"wall: cannot reach Kafka at "
                             f"{','.join(self.settings.kafka.bootstrap_servers)}: {exc}") from exc
        try:
            tps, end = await assign_from_beginning(consumer, self.topic,
                                                   self.settings.namespace)
            pending = {tp for tp in tps if end[tp] > 0}
            log.info("wall: rebuilding from %s (%d partitions, %d records at most)",
                     self.topic, len(tps), sum(end.values()))
            if not pending:
                self._set_ready()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batches.items():
                    for rec in records:
                        self.apply_record(rec.key, rec.value, tp.partition, rec.offset)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        self._set_ready()
        finally:
            await consumer.stop()

    def _set_ready(self) -> None:
        self.ready.set()
        log.info("wall: rebuilt %d tiles from %d records of %s", len(self.store),
                 self.rebuilt_records, self.topic)
        if self._on_ready:
            self._on_ready()

    def apply_record(self, key: bytes | None, value: bytes | None, partition: int,
                     offset: int) -> str:
        """Apply one record of the tiles topic to the store; never raises.

        Returns what happened: ``"applied"``, ``"stale"`` (not newer than the held
        version), ``"removed"``/``"absent"`` (a tombstone), or a skip, each counted in
        ``store.stats`` and logged at most once per ``wall.log_every_s`` per kind, with
        the record's topic, partition and offset:

        - ``"undecodable"``: the value is not a tile (``TileDecodeError``): bad input;
        - ``"decoder_error"``: the decoder raised something else: a bug in
          :func:`ioc.tiles.decode_tile`, logged with its traceback;
        - ``"apply_error"``: the tile decoded but could not be stored or sent (e.g. a
          payload the wall cannot encode as JSON): logged with its traceback.

        No dead-letter topic: the wall reads the compacted topic from the start on every
        start, in every replica, without a consumer group, so each bad record would be
        dead-lettered again by every replica on every restart.
        """
        if not self.ready.is_set():
            self.rebuilt_records += 1
        where = (self.topic, partition, offset)
        stats = self.store.stats
        if value is None:
            if key is None:
                stats.undecodable += 1
                self._log.log(logging.WARNING, "tombstone", "wall: skipping %s[%d]@%d: a "
                              "tombstone without a key", *where)
                return "undecodable"
            return "removed" if self.store.remove(key.decode(errors="replace")) else "absent"
        try:
            tile = decode_tile(value)
        except TileDecodeError as exc:
            stats.undecodable += 1
            self._log.log(logging.WARNING, "undecodable", "wall: skipping %s[%d]@%d: %s",
                          *where, exc)
            return "undecodable"
        except Exception:
            stats.decoder_errors += 1
            self._log.log(logging.ERROR, "decoder_error", "wall: skipping %s[%d]@%d: the tile "
                          "decoder failed (a bug in ioc.tiles.decode_tile)", *where, exc_info=True)
            return "decoder_error"
        try:
            return "applied" if self.store.apply(tile) else "stale"
        except Exception:
            stats.apply_errors += 1
            self._log.log(logging.ERROR, "apply_error", "wall: skipping %s[%d]@%d (tile %r): "
                          "cannot store or send it", *where, tile.id[:80], exc_info=True)
            return "apply_error"
