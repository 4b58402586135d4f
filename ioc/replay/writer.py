"""``RecordingWriter``: Kafka records into one MCAP file (the ``mcap`` library's writer:
chunked, zstd/lz4/none, full indexes, chunk and data-section CRCs)."""

from __future__ import annotations

import os

import orjson
from mcap.writer import CompressionType, Writer

from .format import (
    FORMAT_VERSION,
    MESSAGE_ENCODING,
    SCHEMA_ENCODING,
    KafkaRecord,
    encode_message,
    schema_for,
    schema_json,
)

__all__ = ["RecordingWriter"]

_COMPRESSION = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


class RecordingWriter:
    """Writes one recording: one channel per topic, metadata first, index at close.

    ``log_time`` is the Kafka timestamp kept non-decreasing per source partition (see
    ``ioc.replay.format``), so a replay in log-time order keeps each partition's order.
    """

    def __init__(self, path: str | os.PathLike[str], *, namespace: str,
                 partitions: dict[str, int], compression: str = "zstd",
                 chunk_size: int = 1 << 20, extra: dict[str, str] | None = None) -> None:
        self.path = str(path)
        self.namespace = namespace
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._w = Writer(self._fh, chunk_size=chunk_size, compression=_COMPRESSION[compression],
                         enable_crcs=True, enable_data_crcs=True)
        self._w.start(profile="", library=f"ioc-streams/{_tool_version()}")
        self._channels: dict[str, int] = {}
        self._schemas: dict[str, str] = {}
        self._last: dict[tuple[str, int], int] = {}
        self.counts: dict[str, int] = dict.fromkeys(partitions, 0)
        self.bytes = 0
        schema_ids: dict[str, int] = {}
        for topic, nparts in partitions.items():
            suffix = topic[len(namespace) + 1:] if topic.startswith(namespace + ".") else topic
            sname = schema_for(suffix)
            if sname not in schema_ids:
                schema_ids[sname] = self._w.register_schema(sname, SCHEMA_ENCODING, schema_json(sname))
            self._channels[topic] = self._w.register_channel(
                topic, MESSAGE_ENCODING, schema_ids[sname],
                {"kafka.partitions": str(nparts), "ioc.suffix": suffix})
            self._schemas[topic] = sname
        meta = {
            "format": FORMAT_VERSION,
            "namespace": namespace,
            "topics": orjson.dumps(sorted(partitions)).decode(),
            "partitions": orjson.dumps(partitions).decode(),
            "tool": f"ioc-streams {_tool_version()}",
            "log_time": "kafka timestamp (ns), non-decreasing per partition",
            "publish_time": "event time (ns) when the record carries one, else kafka timestamp",
        }
        meta.update(extra or {})
        self._w.add_metadata("ioc.recording", meta)
        self._closed = False

    def write(self, rec: KafkaRecord) -> None:
        """Append one record; KeyError if its topic was not declared at open."""
        ch = self._channels[rec.topic]
        t = rec.timestamp_ms * 1_000_000
        k = (rec.topic, rec.partition)
        last = self._last.get(k, 0)
        if t < last:
            t = last
        self._last[k] = t
        data = encode_message(rec, self._schemas[rec.topic])
        pub = rec.event_time_ns if rec.event_time_ns is not None else rec.timestamp_ms * 1_000_000
        self._w.add_message(ch, log_time=t, data=data, publish_time=pub,
                            sequence=rec.offset & 0xFFFFFFFF)
        self.counts[rec.topic] += 1
        self.bytes += rec.size

    def close(self, *, reason: str = "finished") -> None:
        """Write the end metadata, the index and the footer; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._w.add_metadata("ioc.recording.end", {
            "messages": str(sum(self.counts.values())),
            "per_topic": orjson.dumps(self.counts).decode(),
            "reason": reason,
        })
        self._w.finish()
        self._fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(reason="error" if exc[0] else "finished")


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("ioc-streams")
    except Exception:  # pragma: no cover - not installed
        return "0+unknown"
