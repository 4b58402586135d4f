"""``ioc camera``: capture cameras into ``<ns>.camera.frames``, list the configured cameras.

One process captures several cameras, a thread per camera (OpenCV releases the GIL
while decoding) plus a publisher thread per camera that drains the camera's
``LatestQueue`` into one shared Kafka producer (librdkafka). A slow broker therefore
costs dropped frames (counted as ``queue_full``), never memory.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from .config import Settings

__all__ = ["FramePublisher", "camera", "run_cameras"]

log = logging.getLogger(__name__)


class FramePublisher(threading.Thread):
    """Drains one camera's queue into Kafka (key camera id, frame headers, JPEG value)."""

    def __init__(self, producer: Any, topic: str, capture: Any, *, max_in_flight: int = 8) -> None:
        super().__init__(name=f"publish-{capture.cam.id}", daemon=True)
        self.producer = producer
        self.topic = topic
        self.capture = capture
        # librdkafka's own bound (100,000 records) is far beyond what a frame may wait,
        # so the bound is here: at most ``max_in_flight`` unacknowledged frames; beyond
        # that the camera's LatestQueue fills and drops its oldest frame (queue_full).
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        from vision.capture import frame_headers

        from .kafka.rdkafka import KafkaException

        stats = self.capture.stats
        key = self.capture.cam.id.encode()
        producer = self.producer

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failed(err)
                return
            stats.published += 1
            self._in_flight.release()

        last_warned = [0.0]

        def failed(exc: object) -> None:
            stats.drop("publish_failed")
            self._in_flight.release()
            now = time.monotonic()
            if now - last_warned[0] >= 10:  # one line per 10 s, not one per frame
                last_warned[0] = now
                log.warning("camera %s: publish to %s failed (%d so far): %s",
                            self.capture.cam.id, self.topic,
                            stats.dropped["publish_failed"], exc)

        while not self._stop_evt.is_set():
            # Delivery reports are served by whoever polls: every publisher thread does,
            # so a camera whose frames are all in flight still gets its slots back.
            producer.poll(0)
            if not self._in_flight.acquire(timeout=0.05):
                producer.poll(0.05)
                continue
            f = self.capture.queue.get(timeout=0.2)
            if f is None:
                self._in_flight.release()
                continue
            try:
                producer.produce(self.topic, key=key, value=f.jpeg, headers=frame_headers(f),
                                 timestamp=int(f.ts * 1000), on_delivery=report)
            except (BufferError, KafkaException) as exc:  # queue full, or refused
                failed(exc)


def _producer(settings: Settings, topic: str) -> Any:
    """The capture's librdkafka producer (KafkaError: no broker answered).

    It was kafka-python's until session 16: while the broker was away, that producer
    spun a core for as long as it held frames for partitions whose leader it did not
    know (docs/reliability.md, "Python clients that spin while the broker is away")."""
    from .kafka.clients import check_broker, rdkafka_conf
    from .kafka.rdkafka import Producer

    conf = rdkafka_conf(settings.kafka, "producer")
    conf.update({
        "acks": 1,  # frames are perishable: one replica is enough, latency matters more
        "enable.idempotence": False,
        "linger.ms": 2,
        "message.max.bytes": 4 * 1024 * 1024,
        "retries": 2,
        # a frame not delivered within 10 s is stale: dropped (publish_failed)
        "message.timeout.ms": 10_000,
        "reconnect.backoff.max.ms": 1000,
    })
    producer = Producer(conf)
    check_broker(producer, settings.kafka, topic, settings.kafka.request_timeout_s, "")
    return producer


def run_cameras(
    settings: Settings,
    camera_ids: list[str] | None = None,
    *,
    stats_every_s: float = 10.0,
    duration_s: float | None = None,
    stop_event: threading.Event | None = None,
    on_start: Callable[[list[Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Capture cameras until SIGTERM/SIGINT, ``duration_s``, or every file source ended.

    Returns the per-camera statistics (also logged every ``stats_every_s``).
    ``on_start(captures)`` is told the ``CameraCapture`` threads before they start
    (``ioc.metrics.cameras.CaptureCollector`` reads them at scrape time).

    Raises:
        click.BadParameter: an unknown camera id was asked for.
        KafkaError: the broker cannot be reached.
    """
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        # Before the heavy imports below, so an early SIGTERM still stops cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    from vision.capture import CameraCapture, LatestQueue

    from .topics import topic_name

    cs = settings.cameras
    if camera_ids:
        unknown = [c for c in camera_ids if cs.get(c) is None]
        if unknown:
            known = [c.id for c in cs.cameras]
            raise click.BadParameter(f"unknown camera(s) {unknown}; configured: {known}")
        chosen = list(camera_ids)
    else:
        chosen = [c.id for c in cs.cameras if c.enabled]
    if not chosen:
        raise click.UsageError("no cameras to capture: configure cameras.cameras (see docs/cameras.md)")
    topic = topic_name(settings.namespace, "camera.frames")
    producer = _producer(settings, topic)
    captures = []
    publishers = []
    for cid in chosen:
        cam = cs.effective(cid)
        cap = CameraCapture(cam, LatestQueue(cs.publish_queue), reconnect=cs.reconnect,
                            open_timeout_s=cs.open_timeout_s, read_timeout_s=cs.read_timeout_s)
        captures.append(cap)
        publishers.append(FramePublisher(producer, topic, cap))
        log.info("camera %s: %s source %s at %.1f fps, width %d", cid, cam.kind,
                 cs.get(cid).redacted_url() if cs.get(cid) else "?", cam.fps, cam.width)  # type: ignore[union-attr]
    if on_start is not None:
        on_start(captures)
    for t in [*captures, *publishers]:
        t.start()
    started = time.monotonic()
    next_stats = started + stats_every_s
    try:
        while not stop.is_set():
            stop.wait(0.2)
            now = time.monotonic()
            if duration_s is not None and now - started >= duration_s:
                break
            if all(c.finished for c in captures):
                break
            if now >= next_stats:
                next_stats = now + stats_every_s
                for c in captures:
                    log.info("camera %s stats %s", c.cam.id, json.dumps(c.stats.as_dict()))
    finally:
        for c in captures:
            c.stop()
        for c in captures:
            c.join(timeout=5)
        # Publish what is still queued (bounded by the queue size), then stop publishers.
        deadline = time.monotonic() + 3
        while any(len(c.queue) for c in captures) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in publishers:
            p.stop()
        for p in publishers:
            p.join(timeout=3)
        producer.flush(5)
    return {c.cam.id: {**c.stats.as_dict(), "last_seq": c.seq - 1} for c in captures}


@click.group()
def camera() -> None:
    """Camera capture into Kafka (<ns>.camera.frames)."""


@camera.command("run")
@click.option("--camera", "camera_ids", multiple=True, metavar="ID",
              help="Capture only this camera (repeatable; default: every enabled camera).")
@click.option("--stats-every", default=10.0, show_default=True, type=click.FloatRange(0.5),
              help="Seconds between statistics lines in the log (-v shows them).")
@click.option("--duration", default=None, type=click.FloatRange(0.1),
              help="Stop after this many seconds (default: run until SIGTERM/SIGINT).")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.camera, 9405; 0: any free).")
@click.pass_obj
def camera_run(c: Any, camera_ids: tuple[str, ...], stats_every: float, duration: float | None,
               metrics_port: int | None) -> None:
    """Capture cameras: sample to the target fps, resize, JPEG-encode, publish.

    Frames go to <ns>.camera.frames keyed by camera id with headers seq, ts (capture
    time, unix seconds), width and height. Sources reconnect with exponential backoff;
    file sources with loop: true start again at their end. On SIGTERM the process
    stops cleanly and prints one JSON line of per-camera statistics (frames read,
    published, dropped by reason, reconnects).
    """
    from .metrics import start_metrics
    from .metrics.cameras import CaptureCollector

    captures: list[Any] = []  # filled by run_cameras, read by the collector
    endpoint = start_metrics(c.settings, "camera", [CaptureCollector(captures)],
                             port=metrics_port)
    try:
        stats = run_cameras(c.settings, list(camera_ids) or None, stats_every_s=stats_every,
                            duration_s=duration, on_start=captures.extend)
    finally:
        if endpoint is not None:
            endpoint.close()
    click.echo(json.dumps({"cameras": stats}))
    sys.stdout.flush()


@camera.command("list")
@click.pass_obj
def camera_list(c: Any) -> None:
    """List the configured cameras with their effective capture settings (no passwords)."""
    cs = c.settings.cameras
    if not cs.cameras:
        click.echo("no cameras configured (cameras.cameras)")
    for src in cs.cameras:
        e = cs.effective(src.id)
        size = f"{e.width}x{e.height}" if e.height else f"{e.width}w"
        click.echo(f"{src.id:20} {'on ' if src.enabled else 'off'} {e.kind:5} {e.fps:5.1f} fps "
                   f"{size:10} q{e.jpeg_quality} {'loop ' if src.loop else ''}{src.redacted_url()}")
