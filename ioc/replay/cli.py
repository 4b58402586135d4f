"""The ``ioc record``, ``ioc replay`` and ``ioc runs`` commands (registered in ``ioc.cli``)."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ..cli import Ctx, pass_ctx
from ..errors import IOCError

__all__ = ["register"]


def _time_opt(value: str | None, what: str) -> float | None:
    from .format import parse_time

    if value is None:
        return None
    try:
        return parse_time(value, now=time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


def _run_with_signals(coro_fn: Callable[[asyncio.Event], Any]) -> Any:
    """Run ``coro_fn(stop)``; SIGINT/SIGTERM set ``stop`` so files and producers close properly."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await coro_fn(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


# -- record ------------------------------------------------------------------------------


@click.command("record")
@click.argument("output", type=click.Path(dir_okay=False, writable=True))
@click.option("-t", "--topic", "topics", multiple=True,
              help="Catalogue topic suffix (events, camera.frames, ...) or full name; repeat. "
                   "Default: every catalogue topic of the namespace.")
@click.option("--from", "from_", metavar="TIME",
              help="Start at this Kafka timestamp (ISO 8601, unix s, now, -10m). Default: now (live).")
@click.option("--to", metavar="TIME", help="Stop before this Kafka timestamp (past or future).")
@click.option("--duration", type=float, metavar="SECONDS", help="Stop this many seconds from now.")
@click.option("--compression", type=click.Choice(["zstd", "lz4", "none"]), default=None,
              help="Chunk compression (default: replay.compression).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@pass_ctx
def record_cmd(c: Ctx, output: str, topics: tuple[str, ...], from_: str | None, to: str | None,
               duration: float | None, compression: str | None, no_progress: bool) -> None:
    """Record Kafka topics of the namespace into the MCAP file OUTPUT.

    One channel per topic; keys, headers, partitions, offsets, Kafka timestamps and event
    times are kept; camera frames are foxglove.CompressedImage (JSON) so MCAP viewers
    show them. Without --to/--duration it records until SIGINT/SIGTERM and then closes
    the file properly (index and footer written).
    """
    from .record import record, resolve_topics

    s = c.settings
    start_s = _time_opt(from_, "--from")
    end_s = _time_opt(to, "--to")
    if duration is not None:
        if end_s is not None:
            raise click.BadParameter("give --to or --duration, not both", param_hint="--duration")
        end_s = time.time() + duration
    try:
        names = resolve_topics(s.namespace, topics)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--topic") from None
    cfg = s.replay

    def ready(rng: Any) -> None:
        until = "until SIGINT/SIGTERM" if end_s is None else \
            f"until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(end_s))}"
        click.echo(f"recording {len(names)} topic(s) ({sum(rng.partitions.values())} partitions) "
                   f"of {s.namespace!r} into {output} {until}", err=True)

    result = _run_with_signals(lambda stop: record(
        s, output, names, start_s=start_s, end_s=end_s, stop=stop, progress=not no_progress,
        compression=compression or cfg.compression, chunk_size=cfg.chunk_size_bytes,
        on_ready=ready))
    click.echo(result.line())
    for t, n in sorted(result.per_topic.items()):
        if n:
            click.echo(f"  {t:32} {n}")


# -- replay ------------------------------------------------------------------------------


class _ReplayGroup(click.Group):
    """``ioc replay FILE ...`` is short for ``ioc replay file FILE ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["file", *args]
        return super().parse_args(ctx, args)


@click.group("replay", cls=_ReplayGroup, invoke_without_command=False)
def replay_group() -> None:
    """Replay a recording (``ioc replay FILE``), a Kafka time range or stored events
    into a namespace: by default a new one, r<UTC time>; the live one only with --into-live.
    """


def _target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--no-progress", is_flag=True, help="No progress bar.")(f)
    f = click.option("--timestamps", type=click.Choice(["original", "now"]), default="original",
                     show_default=True,
                     help="Kafka timestamps of the replayed records: as recorded, or the "
                          "time of the replay (for recordings older than topic retention).")(f)
    f = click.option("--speed", default="1", show_default=True,
                     help="0.25 to 1000 times real time, or 'max' (as fast as possible).")(f)
    f = click.option("--into-live", is_flag=True,
                     help="Replay into the live namespace (the one of -n/config). Explicit on purpose.")(f)
    f = click.option("--into", metavar="NAMESPACE",
                     help="Target namespace (created if needed). Default: a new r<yyyymmddHHMMSS>.")(f)
    return f


def _speed(value: str) -> float:
    from .timing import parse_speed

    try:
        return parse_speed(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--speed") from None


def _check_retention(topic_map: dict[str, str], oldest_ms: int | None, keep: bool) -> None:
    from ..topics import CATALOGUE

    if not keep or oldest_ms is None:
        return
    by_name = {s.suffix: s for s in CATALOGUE}  # retention only: partition counts do not matter
    age_ms = time.time() * 1000 - oldest_ms
    for target in topic_map.values():
        sp = by_name.get(target.split(".", 1)[1])
        if sp is not None and sp.retention_ms is not None and age_ms > sp.retention_ms * 0.9:
            raise IOCError(
                f"records are {age_ms / 3.6e6:.0f} h old but {target} keeps {sp.retention_ms / 3.6e6:.0f} h: "
                "with original timestamps the broker would delete them; use --timestamps now")


@replay_group.command("file")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_target_options
@click.option("--from", "from_", metavar="TIME", help="Start at this record time (Kafka timestamp); "
              "seeks with the MCAP chunk index.")
@click.option("--to", metavar="TIME", help="Stop before this record time.")
@click.option("-t", "--topic", "topics", multiple=True, help="Only these recorded topic suffixes; repeat.")
@click.option("--loop", is_flag=True, help="Start again at the end, until SIGINT/SIGTERM.")
@click.option("--salvage", is_flag=True,
              help="Replay the intact part of a damaged recording (everything before the damage).")
@click.option("--no-verify", is_flag=True,
              help="Skip the CRC check of the whole file before replaying (huge files).")
@click.option("--max-gap", type=float, metavar="SECONDS",
              help="Shorten idle gaps of the recording to at most this long (default: keep).")
@pass_ctx
def replay_file(c: Ctx, file: str, into: str | None, into_live: bool, speed: str, timestamps: str,
                no_progress: bool, from_: str | None, to: str | None, topics: tuple[str, ...],
                loop: bool, salvage: bool, no_verify: bool, max_gap: float | None) -> None:
    """Replay the recording FILE into a namespace.

    The recording is checked first: its topics, schemas and partition counts must fit
    the target (else it is refused, saying what differs), and a damaged file is refused
    with the byte offset and record number of the damage unless --salvage. Records keep
    their key, value, headers, partition and (default) timestamp; order per partition
    (hence per key) is kept; at 1x the gaps between records are kept.
    """
    from .engine import (
        check_recording,
        choose_target,
        recording_source,
        run_replay,
        setup_target,
        target_topics,
    )
    from .kafka_io import KafkaTarget
    from .recording import open_recording
    from .timing import ReplayPacer

    sp = _speed(speed)
    start_s, end_s = _time_opt(from_, "--from"), _time_opt(to, "--to")
    live = c.settings
    rec = open_recording(file, verify=not no_verify)
    with rec:
        info = rec.info
        if info.damage is not None:
            if not salvage:
                raise info.damage
            click.echo(f"warning: {info.damage}; replaying those (--salvage)", err=True)
        target = choose_target(live, into=into, into_live=into_live)
        topic_map = check_recording(info, target.namespace, target.topics)
        if topics:
            wanted = {f"{info.namespace}.{t}" if not t.startswith(f"{info.namespace}.") else t
                      for t in topics}
            unknown = wanted - set(topic_map)
            if unknown:
                raise click.BadParameter(f"not in the recording: {sorted(unknown)}; it has "
                                         f"{sorted(topic_map)}", param_hint="--topic")
            topic_map = {k: v for k, v in topic_map.items() if k in wanted}
        keep = timestamps == "original"
        _check_retention(topic_map, info.start_ns // 1_000_000 if info.message_count else None, keep)
        setup_target(target, target_topics(topic_map, target.namespace, target.topics), tag={
            "source": "recording", "path": file, "recorded_namespace": info.namespace,
            "started_at": time.time(), "speed": speed})
        click.echo(f"replaying {file} ({info.message_count} messages, {info.mode}"
                   f"{', verified' if info.verified else ''}) into namespace {target.namespace!r} "
                   f"at {'max' if sp == math.inf else f'{sp:g}x'}", err=True)
        source = recording_source(
            rec, start_ns=None if start_s is None else int(start_s * 1e9),
            end_ns=None if end_s is None else int(end_s * 1e9), topics=list(topic_map))
        total = None if (start_s or end_s or topics) else info.message_count
        cfg = live.replay
        target_io = KafkaTarget(target, keep_timestamps=keep, linger_ms=cfg.linger_ms,
                                batch_bytes=cfg.batch_bytes)
        stats = _run_with_signals(lambda stop: run_replay(
            source, target_io, topic_map, ReplayPacer(sp, max_gap_s=max_gap), loop=loop,
            total=total, progress=not no_progress, stop=stop))
    click.echo(f"namespace {target.namespace}: {stats.line()}")
    if info.damage is not None:
        sys.exit(3)


@replay_group.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-verify", is_flag=True, help="Read only the index (fast), no CRC check.")
def replay_info(file: str, no_verify: bool) -> None:
    """Show what a recording holds and whether it is intact (exit 3 when damaged)."""
    from .recording import open_recording

    with open_recording(file, verify=not no_verify) as rec:
        info = rec.info
        meta = info.metadata.get("ioc.recording", {})
        click.echo(f"{file}: {info.size} bytes, {info.mode}, "
                   f"{'verified' if info.verified else 'not verified'}")
        click.echo(f"  namespace {meta.get('namespace')}, format {meta.get('format')}, "
                   f"tool {meta.get('tool')}")
        if info.message_count:
            fmt = "%Y-%m-%dT%H:%M:%S"
            click.echo(f"  {info.message_count} messages from "
                       f"{time.strftime(fmt, time.gmtime(info.start_ns / 1e9))}Z to "
                       f"{time.strftime(fmt, time.gmtime(info.end_ns / 1e9))}Z, {len(info.chunks)} chunks")
        parts = info.partitions
        for cid, ch in sorted(info.channels.items()):
            click.echo(f"  {ch.topic:32} {info.per_channel.get(cid, 0):>9} msgs  "
                       f"p={parts.get(ch.topic)}  {info.schema_of(cid)}")
        end = info.metadata.get("ioc.recording.end")
        if end:
            click.echo(f"  closed: {end.get('reason')}")
        if info.damage is not None:
            click.echo(f"  DAMAGED: {info.damage}")
            sys.exit(3)


@replay_group.command("kafka")
@click.option("--source", "source_ns", required=True, metavar="NAMESPACE",
              help="Namespace whose topics are read.")
@click.option("--from", "from_", required=True, metavar="TIME", help="First Kafka timestamp (offsets for times).")
@click.option("--to", metavar="TIME", help="Stop before this Kafka timestamp (default: now).")
@click.option("-t", "--topic", "topics", multiple=True, help="Topic suffixes (default: events).")
@_target_options
@pass_ctx
def replay_kafka(c: Ctx, source_ns: str, from_: str, to: str | None, topics: tuple[str, ...],
                 into: str | None, into_live: bool, speed: str, timestamps: str,
                 no_progress: bool) -> None:
    """Replay a Kafka time range of another namespace's topics into a namespace."""
    from .engine import choose_target, run_replay, setup_target
    from .kafka_io import KafkaTarget, TopicRange, consume_range
    from .record import resolve_topics, topic_partitions
    from .timing import ReplayPacer

    sp = _speed(speed)
    start_s = _time_opt(from_, "--from")
    end_s = _time_opt(to, "--to") or time.time()
    live = c.settings
    src = live.with_namespace(source_ns)
    try:
        names = resolve_topics(source_ns, topics or ("events",))
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--topic") from None
    target = choose_target(live, into=into, into_live=into_live)
    if target.namespace == source_ns:
        raise click.BadParameter("source and target namespaces are the same", param_hint="--into")
    topic_map = {n: f"{target.namespace}.{n[len(source_ns) + 1:]}" for n in names}
    specs = [s for s in target.topics.catalogue() if s.name(target.namespace) in topic_map.values()]
    # a target created with other partition counts (topics.partitions) gets each record
    # in its key's partition: the way to change a namespace's counts is a replay into a new one
    have = topic_partitions(src, names)
    repartition = {s.name(target.namespace): s.partitions for s in specs
                   if have[f"{source_ns}.{s.suffix}"] != s.partitions}
    setup_target(target, specs, tag={"source": "kafka", "namespace": source_ns,
                                     "from": start_s, "to": end_s, "started_at": time.time()})
    rng = TopicRange()

    def source() -> Any:
        async def gen() -> Any:
            async for r in consume_range(src, names, start_s=start_s, end_s=end_s, info=rng):
                yield r.timestamp_ms * 1_000_000, r
        return gen()

    cfg = live.replay
    stats = _run_with_signals(lambda stop: run_replay(
        source, KafkaTarget(target, keep_timestamps=timestamps == "original",
                            linger_ms=cfg.linger_ms, batch_bytes=cfg.batch_bytes,
                            repartition=repartition),
        topic_map, ReplayPacer(sp), progress=not no_progress, stop=stop))
    click.echo(f"namespace {target.namespace}: {stats.line()}")


@replay_group.command("db")
@click.option("--source", "source_ns", required=True, metavar="NAMESPACE",
              help="Namespace whose 'events' table is read.")
@click.option("--from", "from_", required=True, metavar="TIME", help="First event time.")
@click.option("--to", metavar="TIME", help="Stop before this event time (default: now).")
@_target_options
@pass_ctx
def replay_db(c: Ctx, source_ns: str, from_: str, to: str | None, into: str | None,
              into_live: bool, speed: str, timestamps: str, no_progress: bool) -> None:
    """Replay stored events (the events table of a namespace) into <target>.events,
    in event-time order, keyed by entity, with the canonical encoding."""
    from .db_source import count_events, db_events
    from .engine import choose_target, run_replay, setup_target
    from .kafka_io import KafkaTarget
    from .timing import ReplayPacer

    sp = _speed(speed)
    start_s = _time_opt(from_, "--from")
    end_s = _time_opt(to, "--to") or time.time()
    assert start_s is not None
    live = c.settings
    src = live.with_namespace(source_ns)
    target = choose_target(live, into=into, into_live=into_live)
    if target.namespace == source_ns:
        raise click.BadParameter("source and target namespaces are the same", param_hint="--into")
    total = count_events(src, start_s, end_s)
    events = target.topics.spec("events")
    topic_map = {f"{source_ns}.events": events.name(target.namespace)}
    setup_target(target, [events], tag={"source": "db", "namespace": source_ns,
                                                "from": start_s, "to": end_s, "started_at": time.time()})
    cfg = live.replay
    stats = _run_with_signals(lambda stop: run_replay(
        lambda: db_events(src, start_s, end_s, partitions=events.partitions), KafkaTarget(
            target, keep_timestamps=timestamps == "original", linger_ms=cfg.linger_ms,
            batch_bytes=cfg.batch_bytes),
        topic_map, ReplayPacer(sp), total=total, progress=not no_progress, stop=stop))
    click.echo(f"namespace {target.namespace}: {stats.line()}")


def register(main: click.Group) -> None:
    """Add ``record``, ``replay`` and ``runs`` to the ``ioc`` command."""
    from .runs_cli import runs_group

    main.add_command(record_cmd)
    main.add_command(replay_group)
    main.add_command(runs_group)
