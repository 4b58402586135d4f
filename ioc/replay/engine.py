"""Replay: choose and prepare the target namespace, check the recording fits, and move
records from a source (recording, Kafka range, database) to the target at a pace.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import Settings, TopicSettings
from ..topics import CATALOGUE, TopicSpec
from .exceptions import RecordingError, RecordingMismatch
from .format import MESSAGE_ENCODING, SCHEMA_ENCODING, KafkaRecord, decode_message, schema_for
from .kafka_io import KafkaTarget
from .recording import FORMAT_VERSION, Recording, RecordingInfo
from .timing import ReplayPacer

__all__ = [
    "ReplayStats",
    "check_recording",
    "choose_target",
    "recording_source",
    "run_replay",
    "setup_target",
    "target_topics",
]

_SPECS = {s.suffix: s for s in CATALOGUE}


def choose_target(live: Settings, *, into: str | None, into_live: bool, now: float | None = None) -> Settings:
    """The settings of the namespace to replay into.

    Default: a new namespace ``r<UTC yyyymmddHHMMSS>``. The live namespace only with
    ``into_live``; naming it with ``into`` alone is refused.

    Raises:
        RecordingMismatch: the live namespace was named without ``into_live``.
    """
    if into_live:
        if into not in (None, live.namespace):
            raise RecordingMismatch([f"--into {into!r} contradicts --into-live ({live.namespace!r})"],
                                    path="(replay)", target=into or live.namespace)
        return live
    if into is None:
        into = "r" + time.strftime("%Y%m%d%H%M%S", time.gmtime(now if now is not None else time.time()))
    if into == live.namespace:
        raise RecordingMismatch(
            [f"{into!r} is the live namespace; replaying into it needs --into-live"],
            path="(replay)", target=into)
    return live.with_namespace(into)


def _suffix_of(topic: str, namespace: str | None, meta: dict[str, str]) -> str:
    if meta.get("ioc.suffix"):
        return meta["ioc.suffix"]
    if namespace and topic.startswith(namespace + "."):
        return topic[len(namespace) + 1:]
    return topic


def check_recording(info: RecordingInfo, target_namespace: str,
                    topics: TopicSettings | None = None) -> dict[str, str]:
    """Map each recorded topic to its target topic, or refuse the recording.

    A recording fits when it is this format, every channel is a catalogue topic with the
    schema and encoding this version writes for it, and its partition count is the
    target's (``topics``: the target's settings; default the catalogue's): records are
    produced to their original partition. (``ioc replay kafka`` re-partitions instead.)

    Raises:
        RecordingMismatch: listing every problem (expected vs found, per topic).
    """
    problems: list[str] = []
    fmt = info.metadata.get("ioc.recording", {}).get("format")
    if fmt != FORMAT_VERSION:
        problems.append(f"format: expected {FORMAT_VERSION!r}, found {fmt!r} "
                        "(metadata record 'ioc.recording')")
    ns = info.namespace
    out: dict[str, str] = {}
    for cid, ch in sorted(info.channels.items()):
        suffix = _suffix_of(ch.topic, ns, ch.metadata)
        sp = _SPECS.get(suffix)
        if sp is not None and topics is not None:
            sp = topics.spec(suffix)
        if sp is None:
            problems.append(f"{ch.topic}: suffix {suffix!r} is not in the topic catalogue "
                            f"(known: {', '.join(sorted(_SPECS))})")
            continue
        want_schema = schema_for(suffix)
        got_schema = info.schema_of(cid)
        if got_schema != want_schema:
            problems.append(f"{ch.topic}: schema expected {want_schema!r}, found {got_schema!r}")
        sc = info.schemas.get(ch.schema_id)
        if sc is not None and sc.encoding != SCHEMA_ENCODING:
            problems.append(f"{ch.topic}: schema encoding expected {SCHEMA_ENCODING!r}, found {sc.encoding!r}")
        if ch.message_encoding != MESSAGE_ENCODING:
            problems.append(f"{ch.topic}: message encoding expected {MESSAGE_ENCODING!r}, "
                            f"found {ch.message_encoding!r}")
        parts = int(ch.metadata.get("kafka.partitions", "0") or 0)
        if parts != sp.partitions:
            problems.append(f"{ch.topic}: recorded with {parts} partition(s), target "
                            f"{sp.name(target_namespace)} has {sp.partitions}")
        out[ch.topic] = sp.name(target_namespace)
    if problems:
        raise RecordingMismatch(problems, path=info.path, target=target_namespace)
    return out


def target_topics(topic_map: dict[str, str], target_namespace: str,
                  topics: TopicSettings | None = None) -> list[TopicSpec]:
    """The catalogue entries of the target topics (for ``ensure_topics``), with the
    partition counts of ``topics`` (default: the catalogue's)."""
    names = set(topic_map.values())
    specs = CATALOGUE if topics is None else topics.catalogue()
    return [s for s in specs if s.name(target_namespace) in names]


def setup_target(target: Settings, specs: Iterable[TopicSpec], *, tag: dict[str, Any]) -> None:
    """Create the target's topics (``ensure_topics``) and schema (``migrate``), and note
    in its ``namespace_info`` what was replayed into it (key ``replay``).

    Raises:
        RecordingMismatch: an existing target topic has other partitions or policy.
    """
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from ..kafka import ensure_topics
    from ..storage import connect, migrate

    report = ensure_topics(target, list(specs))
    if not report.success:
        raise RecordingMismatch([f"{t}: {'; '.join(w)}" for t, w in report.mismatched.items()],
                                path="(target topics)", target=target.namespace)
    migrate(target)
    with connect(target.database, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "insert into {} (key, value) values ('replay', %s) on conflict (key) do update "
            "set value = excluded.value, updated_at = now()").format(
                sql.Identifier(target.db_schema, "namespace_info")), (Jsonb(tag),))


def recording_source(rec: Recording, *, start_ns: int | None = None, end_ns: int | None = None,
                     topics: Iterable[str] | None = None) -> Callable[[], Iterator[tuple[int, KafkaRecord]]]:
    """A re-startable source of ``(record time ns, record)`` from a recording."""

    def gen() -> Iterator[tuple[int, KafkaRecord]]:
        decode = decode_message
        for m in rec.messages(start_ns=start_ns, end_ns=end_ns, topics=topics):
            try:
                r = decode(m.data, topic=m.topic, schema=m.schema)
            except RecordingError as exc:
                raise RecordingError(f"{rec.path}: chunk at byte {m.chunk_offset}: {exc}") from exc
            yield m.log_time_ns, r

    return gen


@dataclass
class ReplayStats:
    """What a replay did."""

    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    loops: int = 0
    max_lag_s: float = 0.0
    stopped: bool = False

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.messages} messages, {self.bytes / 1e6:.1f} MB of keys+values in {self.seconds:.2f} s "
                f"({self.rate:,.0f} msg/s, {self.mb_per_s:.1f} MB/s), loops {self.loops}, "
                f"max lag {self.max_lag_s * 1000:.0f} ms" + (", stopped" if self.stopped else ""))


async def _pump(items: Iterable[tuple[int, KafkaRecord]] | AsyncIterable[tuple[int, KafkaRecord]],
                target: KafkaTarget, topic_map: dict[str, str], pacer: ReplayPacer,
                stats: ReplayStats, bar: Any, stop: asyncio.Event | None,
                clock: Callable[[], float]) -> None:
    """One pass over a source. Sync sources (files, the database) are iterated without an
    async wrapper: at 50k+ records/s every layer per record shows."""
    paced = pacer.speed != math.inf
    pending = 0
    n = nbytes = 0

    async def body(t_ns: int, rec: KafkaRecord) -> bool:
        if paced:
            wait = pacer.delay(t_ns, clock())
            if wait > 0:
                await target.flush_pending()
            while wait > 0 and not (stop is not None and stop.is_set()):
                await asyncio.sleep(min(wait, 0.25))  # short naps: SIGINT stays prompt
                wait = pacer.delay(t_ns, clock())
        return stop is not None and stop.is_set()

    check = paced or stop is not None
    try:
        if hasattr(items, "__aiter__"):
            async for t_ns, rec in items:  # type: ignore[union-attr]
                if check and await body(t_ns, rec):
                    stats.stopped = True
                    break
                await target.send(topic_map[rec.topic], rec)
                n += 1
                nbytes += len(rec.key or b"") + len(rec.value or b"")
                pending += 1
                if pending >= 512:
                    bar.update(pending)
                    pending = 0
        else:
            for t_ns, rec in items:  # type: ignore[union-attr]
                if (paced and await body(t_ns, rec)) or (stop is not None and stop.is_set()):
                    stats.stopped = True
                    break
                await target.send(topic_map[rec.topic], rec)
                n += 1
                nbytes += len(rec.key or b"") + len(rec.value or b"")
                pending += 1
                if pending >= 512:
                    bar.update(pending)
                    pending = 0
    finally:
        bar.update(pending)
        stats.messages += n
        stats.bytes += nbytes
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()  # an early stop ends the source (and its reader process) now


async def run_replay(source: Callable[[], Iterable[tuple[int, KafkaRecord]] | AsyncIterable[tuple[int, KafkaRecord]]],
                     target: KafkaTarget, topic_map: dict[str, str], pacer: ReplayPacer, *,
                     loop: bool = False, total: int | None = None, progress: bool = True,
                     stop: asyncio.Event | None = None,
                     clock: Callable[[], float] = time.monotonic) -> ReplayStats:
    """Send every record of ``source()`` to its mapped topic, paced by ``pacer``.

    ``loop`` restarts the source until ``stop`` is set. Order is the source's order (per
    partition it is the original order). The target is started here and closed at the
    end. ``stats.bytes`` counts keys and values.

    Raises:
        KeyError: a record's topic is not in ``topic_map`` (the caller checked the source).
        KafkaError: records could not be delivered.
    """
    from tqdm import tqdm

    stats = ReplayStats()
    bar = tqdm(total=total, unit="msg", unit_scale=True, disable=not progress, smoothing=0.1,
               dynamic_ncols=True, desc="replay")
    await target.start()
    t0 = clock()
    try:
        while True:
            stats.loops += 1
            await _pump(source(), target, topic_map, pacer, stats, bar, stop, clock)
            if not loop or stats.stopped or (stop is not None and stop.is_set()):
                break
            pacer.restart()
            if bar.total is not None:
                bar.total += total or 0
    finally:
        try:
            await target.close()
        finally:
            stats.seconds = clock() - t0
            stats.max_lag_s = pacer.max_lag_s
            bar.close()
    return stats
