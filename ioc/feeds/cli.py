"""``ioc feeds``: the demo feed simulator."""

from __future__ import annotations

import heapq
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import KafkaError
from ..events import Event

__all__ = ["feeds"]

log = logging.getLogger("ioc.feeds")


@click.group()
def feeds() -> None:
    """Demo feeds: recorded sensor series and e-government events, live."""


def _series(data: Path | None, synthetic: bool) -> tuple[list, str]:  # type: ignore[type-arg]
    from . import data_dir, load_series, synthetic_series

    root = data or data_dir()
    if not synthetic:
        if root.is_dir():
            found = load_series(root)
            if found:
                return found, f"recorded series from {root}"
        why = f"no sensor series under {root}"
    else:
        why = "--synthetic given"
    return synthetic_series(), f"SYNTHETIC series ({why}); set IOC_DATA_DIR to use recordings"


@feeds.command("list")
@click.option("--data-dir", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with sensors/air, sensors/nab, sensors/noise (default: $IOC_DATA_DIR "
                   "or ../shared/data next to the repository).")
def feeds_list(data: Path | None) -> None:
    """Show the series a feed run would replay."""
    series, origin = _series(data, False)
    click.echo(origin)
    for s in series:
        metrics = sorted({m for _, v in s.points for m in v})
        click.echo(f"  {s.entity:16} {s.type:13} {len(s.points):6} points over "
                   f"{s.span_s / 86400:6.1f} days  {','.join(metrics)}")


def _send_retrying(pub: Any, pending: list[tuple[str, Event]], counts: Any) -> Any:
    """``pub.send_many`` of the ``(feed, event)`` pairs, retried with backoff while the
    broker does not answer; counted per feed in ``counts`` (``FeedCounts``).

    Resending is safe (the sink keeps one row per event id). The feed falls behind
    meanwhile and catches up after (its events keep their planned times).
    """
    events = [e for _, e in pending]
    delay = 1.0
    while True:
        try:
            res = pub.send_many(events)
            bad = {r.index for r in res.rejected}
            for i, (feed, _) in enumerate(pending):
                counts.add(counts.rejected if i in bad else counts.published, feed)
            return res
        except KafkaError as exc:
            for feed, _ in pending:
                counts.add(counts.errors, feed)
            log.warning("feeds: %d event(s) not sent (%s); retrying in %.0f s", len(events), exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _history_mark(path: Path | None) -> dict[str, Any] | None:
    """The history marker's content (``{"scale", "seed", "sent", "done"}``), None if absent.

    Raises:
        click.ClickException: the file exists but is not a marker.
    """
    if path is None or not path.exists():
        return None
    import orjson

    try:
        d = orjson.loads(path.read_bytes())
        if not isinstance(d, dict):
            raise TypeError(f"a JSON object expected, got {type(d).__name__}")
        return {"scale": float(d["scale"]), "seed": int(d["seed"]), "sent": int(d["sent"]),
                "done": bool(d["done"])}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise click.ClickException(
            f"--egov-history-marker {path}: expected a JSON object with scale, seed, sent, "
            f"done ({exc}); delete it to publish the history again") from exc


def _write_mark(path: Path | None, scale: float, seed: int, sent: int, done: bool) -> None:
    if path is None:
        return
    import orjson

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"scale": scale, "seed": seed, "sent": sent, "done": done}))
    tmp.replace(path)


def _publish_history(pub: Any, counts: Any, scale: float, seed: int, batch: int,
                     marker: Path | None) -> tuple[int, int]:
    """Publish ``egov_history(scale, seed=seed)`` in batches, resuming after the events a
    marker says were acknowledged; returns (sent, rejected) of this run.

    The marker is rewritten after every acknowledged batch, so a feed stopped midway
    resends at most one batch (the scorecards stage would count that batch twice; the
    events table keeps one row per id). A marker of another scale or seed, or one that
    says done, publishes nothing.
    """
    from ._history import egov_history

    mark = _history_mark(marker)
    skip = 0
    if mark is not None:
        if (mark["scale"], mark["seed"]) != (scale, seed):
            log.warning("feeds: %s holds the history at scale %g seed %d; not publishing it "
                        "at scale %g seed %d (delete the file to do so)",
                        marker, mark["scale"], mark["seed"], scale, seed)
            return 0, 0
        if mark["done"]:
            click.echo(f"feeds: e-government history (scale {scale:g}) already published "
                       f"({mark['sent']} events, {marker})")
            return 0, 0
        skip = mark["sent"]
    click.echo(f"feeds: publishing the 2020-2021 e-government history at scale {scale:g}"
               + (f", resuming after {skip} events" if skip else ""))
    sent = rejected = 0
    done = skip
    pending: list[tuple[str, Event]] = []
    for i, event in enumerate(egov_history(scale, seed=seed)):
        if i < skip:
            continue
        pending.append(("egov", event))
        if len(pending) >= batch:
            res = _send_retrying(pub, pending, counts)
            sent, rejected, done = sent + len(res.accepted), rejected + len(res.rejected), done + len(pending)
            pending = []
            _write_mark(marker, scale, seed, done, False)
    if pending:
        res = _send_retrying(pub, pending, counts)
        sent, rejected, done = sent + len(res.accepted), rejected + len(res.rejected), done + len(pending)
    _write_mark(marker, scale, seed, done, True)
    click.echo(f"feeds: e-government history published: sent={sent} rejected={rejected}")
    return sent, rejected


@feeds.command("run")
@click.option("--speed", default=300.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds of recording replayed per second of wall time.")
@click.option("--egov-rate", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="E-government events (dossiers, results, documents) per second, all units.")
@click.option("--egov-history", "history_scale", default=0.0, show_default=True,
              type=click.FloatRange(0, 1), metavar="SCALE",
              help="First publish the 2020-2021 e-government history (the province's published "
                   "figures; 1: ~717k events, 0.01: ~7.2k) at this scale, with historical "
                   "times, then stream live (0: no history).")
@click.option("--egov-history-seed", "history_seed", default=2021, show_default=True, type=int,
              help="Seed of the history's times and procedures (the counts do not depend on it).")
@click.option("--egov-history-marker", "history_marker", default=None,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Progress file of the history: a run resumes after the events it lists and "
                   "publishes nothing once it says done (without it, every run publishes the "
                   "history again, and the scorecards count it again).")
@click.option("--duration", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Stop after this many seconds (0: until Ctrl-C / SIGTERM).")
@click.option("--data-dir", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the recordings (default: $IOC_DATA_DIR or ../shared/data).")
@click.option("--synthetic", is_flag=True, help="Use synthetic series even if recordings exist.")
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 100_000),
              help="Most events sent (and acknowledged) per batch.")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.feeds, 9406; 0: any free).")
@click.pass_obj
def feeds_run(c, speed: float, egov_rate: float, history_scale: float, history_seed: int,  # type: ignore[no-untyped-def]
              history_marker: Path | None, duration: float, data: Path | None,
              synthetic: bool, batch: int, metrics_port: int | None) -> None:
    """Replay sensor series as live events (event time = now) plus e-government events.

    Events go through ioc.publish.Publisher to <ns>.events.raw (validated, idempotent
    producer), so a worker running the 'validate' agent must be up for them to reach
    <ns>.events. Prints one status line every 10 s. With --egov-history, the history
    goes first, as fast as the broker acknowledges it (docs/scorecards.md, "Demo data").
    """
    from ..metrics import start_metrics
    from ..metrics.feeds import FeedCollector, FeedCounts
    from ..publish import Publisher
    from . import EgovGenerator, FeedPlan

    settings = c.settings
    series, origin = _series(data, synthetic)
    click.echo(f"feeds: {origin}; {len(series)} sensors, speed x{speed:g}, "
               f"e-government {egov_rate:g}/s -> {settings.namespace}.events.raw")
    if origin.startswith("SYNTHETIC"):
        log.warning("feeds: %s", origin)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    counts = FeedCounts()
    endpoint = start_metrics(settings, "feeds", [FeedCollector(counts)], port=metrics_port)
    if history_scale > 0:
        try:
            with Publisher(settings, linger_ms=5) as pub:
                _publish_history(pub, counts, history_scale, history_seed, batch, history_marker)
        except KeyboardInterrupt:
            if endpoint is not None:
                endpoint.close()
            click.echo("feeds: stopped during the history")
            return
    start = time.time()
    streams: list[Iterator[tuple[float, str, Event]]] = [
        ((t, "sensors", e) for t, e in FeedPlan(series, speed=speed).events(start))]
    if egov_rate > 0:
        streams.append((t, "egov", e) for t, e in EgovGenerator(rate=egov_rate).events(start))
    merged = heapq.merge(*streams, key=lambda x: x[0])
    sent = rejected = 0
    last_report = time.monotonic()
    pending: list[tuple[str, Event]] = []
    with Publisher(settings, linger_ms=5) as pub:
        try:
            for due, feed, event in merged:
                if duration and due - start > duration:
                    break
                wait = due - time.time()
                if wait > 0 or len(pending) >= batch:
                    if pending:
                        res = _send_retrying(pub, pending, counts)
                        sent += len(res.accepted)
                        rejected += len(res.rejected)
                        pending = []
                    if (wait := due - time.time()) > 0:
                        time.sleep(wait)
                pending.append((feed, event))
                if time.monotonic() - last_report >= 10:
                    last_report = time.monotonic()
                    click.echo(f"feeds: sent={sent} rejected={rejected} "
                               f"elapsed={time.time() - start:.0f}s")
            if pending:
                res = _send_retrying(pub, pending, counts)
                sent += len(res.accepted)
                rejected += len(res.rejected)
        except KeyboardInterrupt:
            pass
        finally:
            if endpoint is not None:
                endpoint.close()
    click.echo(f"feeds: done, sent={sent} rejected={rejected}")
