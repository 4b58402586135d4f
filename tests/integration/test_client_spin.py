"""Our long-running producers stay idle while the broker is away, and deliver once it is back.

On a private broker (stopped and started by the test): the publisher library
(``ioc.publish.Publisher``, librdkafka), the camera capture's producer
(``ioc.cameras_cli._producer``, librdkafka) and an aiokafka producer as the gateway and
Faust's agents use (``ioc.kafka.aio``, with its bound on forced metadata updates), each
with records pending while the broker is stopped. Before session 16, kafka-python's
producer (then the publisher's and the capture's) spun a core in about one broker stop
of four, and aiokafka's in every one (docs/reliability.md, "Python clients that spin
while the broker is away"). Here the whole test process, all three clients together,
must use less than 0.3 of a core over the outage.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
from typing import Any

import pytest

from ioc.config import load_settings

from .test_faults import private_kafka  # noqa: F401  (fixture)

pytestmark = [pytest.mark.kafka]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@pytest.mark.timeout(240)
def test_producers_do_not_spin_while_the_broker_is_away_and_deliver_after(
        private_kafka) -> None:  # noqa: F811
    from ioc.cameras_cli import _producer
    from ioc.errors import KafkaError
    from ioc.kafka import ensure_topics
    from ioc.kafka.aio import AIOKafkaProducer
    from ioc.publish import Publisher
    from ioc.topics import topic_name

    s = load_settings(env=dict(os.environ, IOC_KAFKA__BOOTSTRAP_SERVERS=private_kafka.bootstrap,
                               IOC_NAMESPACE="spin"))
    assert ensure_topics(s).success
    stop = threading.Event()
    got: dict[str, list[float]] = {"publisher": [], "capture": [], "aiokafka": []}
    errors: dict[str, int] = {k: 0 for k in got}

    def publisher() -> None:
        pub = Publisher(s, ack_timeout_s=3.0)
        i = 0
        while not stop.is_set():
            try:
                pub.send_many([{"id": f"p{i}", "source": "spin", "type": "noise.level",
                                "entity": "m1", "time": time.time(), "values": {"db": 1.0}}])
                got["publisher"].append(time.monotonic())
                i += 1
            except KafkaError:
                errors["publisher"] += 1
            stop.wait(0.05)

    frames = topic_name(s.namespace, "camera.frames")
    cap = _producer(s, frames)

    def capture() -> None:
        def report(err: Any, _msg: Any) -> None:
            if err is None:
                got["capture"].append(time.monotonic())
            else:
                errors["capture"] += 1
        while not stop.is_set():
            try:
                cap.produce(frames, key=b"cam-1", value=os.urandom(20_000), on_delivery=report)
            except BufferError:
                errors["capture"] += 1
            cap.poll(0.1)

    def aio() -> None:
        async def main() -> None:
            p = AIOKafkaProducer(bootstrap_servers=private_kafka.bootstrap, acks=1,
                                 linger_ms=2, request_timeout_ms=3000)
            await p.start()
            try:
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(p.send_and_wait(frames, b"x", key=b"k"), 3.0)
                        got["aiokafka"].append(time.monotonic())
                    except Exception:  # timed out or failed while the broker is away
                        errors["aiokafka"] += 1
                    await asyncio.sleep(0.05)
            finally:
                await p.stop()
        asyncio.run(main())

    threads = [threading.Thread(target=f, daemon=True) for f in (publisher, capture, aio)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while not all(got.values()):
            assert time.monotonic() < deadline, f"no delivery before the stop: {errors}"
            time.sleep(0.2)
        private_kafka.stop()
        time.sleep(2)  # the clients find out
        c0, t0 = _cpu_s(), time.monotonic()
        time.sleep(10)
        used = (_cpu_s() - c0) / (time.monotonic() - t0)
        assert all(t.is_alive() for t in threads)
        private_kafka.start()
        t_up = time.monotonic()
        deadline = t_up + 60
        while not all(v and v[-1] > t_up for v in got.values()):
            assert time.monotonic() < deadline, (
                f"not delivering again 60 s after the broker was back: "
                f"{ {k: bool(v and v[-1] > t_up) for k, v in got.items()} }, errors {errors}")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert used < 0.3, f"the producers used {used:.2f} of a core while the broker was away"
