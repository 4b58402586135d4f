"""``ioc record``: Kafka topics of a namespace, for a time range or until stopped, into
one recording file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from ..errors import KafkaError
from ..topics import CATALOGUE, spec
from .kafka_io import TopicRange, consume_range
from .recording import RecordingWriter

__all__ = ["RecordResult", "record", "resolve_topics", "topic_partitions"]


@dataclass
class RecordResult:
    """What ``record`` wrote."""

    path: str
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    per_topic: dict[str, int] = field(default_factory=dict)
    reason: str = "finished"
    skipped_after_end: int = 0

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds else 0.0
        size = Path(self.path).stat().st_size if Path(self.path).exists() else 0
        return (f"{self.path}: {self.messages} messages ({self.bytes / 1e6:.1f} MB of records, "
                f"file {size / 1e6:.1f} MB) in {self.seconds:.1f} s ({rate:,.0f} msg/s); {self.reason}")


def resolve_topics(namespace: str, names: Sequence[str]) -> list[str]:
    """Full topic names for catalogue suffixes (or full names) given on the command line;
    all catalogue topics when ``names`` is empty.

    Raises:
        KeyError: a name is not a catalogue topic (the message lists the known ones).
    """
    if not names:
        return [s.name(namespace) for s in CATALOGUE]
    out = []
    for n in names:
        suffix = n[len(namespace) + 1:] if n.startswith(namespace + ".") else n
        out.append(spec(suffix).name(namespace))
    return list(dict.fromkeys(out))


def topic_partitions(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Partition counts of existing topics.

    Raises:
        KafkaError: a topic does not exist.
    """
    from ..kafka import admin_client

    admin = admin_client(settings.kafka)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            raise KafkaError(f"cannot record {missing}: no such topic(s) in namespace "
                             f"{settings.namespace!r} (run 'ioc topics ensure')")
        return {d["topic"] if "topic" in d else d["name"]: len(d["partitions"])
                for d in admin.describe_topics(list(topics))}
    finally:
        admin.close()


async def record(settings: Settings, path: str, topics: Sequence[str], *, start_s: float | None,
                 end_s: float | None, stop: asyncio.Event | None = None, progress: bool = True,
                 compression: str = "zstd", chunk_size: int = 1 << 20,
                 on_ready: Callable[[TopicRange], None] | None = None) -> RecordResult:
    """Record ``topics`` (full names) of ``settings.namespace`` into ``path``.

    The file is closed properly (index and footer written) when the range ends, when
    ``stop`` is set (SIGINT/SIGTERM in the CLI) and on errors.
    """
    from tqdm import tqdm

    parts = topic_partitions(settings, topics)
    extra = {"from": "" if start_s is None else f"{start_s:.3f}",
             "to": "" if end_s is None else f"{end_s:.3f}",
             "started_at": f"{time.time():.3f}"}
    result = RecordResult(path)
    rng = TopicRange()
    t0 = time.monotonic()
    bar = tqdm(unit="msg", unit_scale=True, disable=not progress, desc="record", dynamic_ncols=True)
    writer = RecordingWriter(path, namespace=settings.namespace, partitions=parts,
                             compression=compression, chunk_size=chunk_size, extra=extra)
    try:
        n = 0
        async for rec in consume_range(settings, topics, start_s=start_s, end_s=end_s, stop=stop,
                                       info=rng, on_ready=on_ready):
            writer.write(rec)
            n += 1
            if n % 256 == 0:
                bar.update(256)
        bar.update(n % 256)
        result.reason = "stopped" if stop is not None and stop.is_set() else "finished"
    except BaseException:
        result.reason = "error"
        raise
    finally:
        writer.close(reason=result.reason)
        bar.close()
        result.messages = sum(writer.counts.values())
        result.bytes = writer.bytes
        result.per_topic = dict(writer.counts)
        result.seconds = time.monotonic() - t0
        result.skipped_after_end = rng.skipped_after_end
    return result
