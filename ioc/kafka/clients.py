"""Client options from settings, in the shapes kafka-python, aiokafka and librdkafka expect."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Literal

from ..config import KafkaSettings
from ..errors import KafkaError

if TYPE_CHECKING:  # confluent_kafka is imported by the functions that make clients
    from confluent_kafka import Producer

__all__ = ["acked_producer", "admin_client", "aiokafka_kwargs", "discard_producer",
           "kafka_python_kwargs", "quiet_kafka_client_logs", "rdkafka_conf"]

_NUMBERS = re.compile(r"\d+")
_CLIENT_NAMES = re.compile(r"\[ioc#\w+-#\]|\[thrd:[^\]]*\]")


class _Throttle(logging.Filter):
    """Lets a Kafka client message through at most once per ``every_s`` (numbers and
    librdkafka client/thread names ignored).

    With the broker away, each client logs a failed connect per broker thread per
    retry: thousands of identical lines a minute across a worker's stages.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = _CLIENT_NAMES.sub("", _NUMBERS.sub("#", record.getMessage()))
        now = time.monotonic()
        if now - self.last.get(text, -1e9) < self.every_s:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[text] = now
        return True


_RDKAFKA_LOG = logging.getLogger("ioc.rdkafka")

# The aiokafka modules (Faust's client, the wall's and the gateway's) that log a line per
# retry while a broker is away.
_AIOKAFKA_LOGGERS = ("aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster",
                     "aiokafka.consumer.consumer", "aiokafka.consumer.fetcher",
                     "aiokafka.consumer.group_coordinator", "aiokafka.producer.producer",
                     "aiokafka.producer.sender")


def quiet_kafka_client_logs(every_s: float = 30.0) -> None:
    """Let each kind of Kafka client log line through at most once per ``every_s``.

    Called by the long-running services at start. With the broker away for 25 s, a
    worker logged ~2,300 identical librdkafka lines and ~5,500 aiokafka ones; the first
    of each kind says all there is to say. A logger filter sees only records logged on
    that very logger, hence the list of aiokafka modules.
    """
    for name in ("ioc.rdkafka", *_AIOKAFKA_LOGGERS):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _Throttle) for f in lg.filters):
            lg.addFilter(_Throttle(every_s))


def rdkafka_conf(k: KafkaSettings, role: Literal["consumer", "producer"]) -> dict[str, Any]:
    """librdkafka properties (``confluent_kafka.Consumer``/``Producer``) from settings.

    librdkafka's log lines (a broker that went away, say) go to the ``ioc.rdkafka``
    logger, so they are formatted and filtered like ours (``quiet_kafka_client_logs``
    lets each kind through at most once per 30 s).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(k.bootstrap_servers),
        "client.id": k.client_id,
        "security.protocol": k.security_protocol.lower(),
        "logger": _RDKAFKA_LOG,
    }
    if role == "producer":
        conf["request.timeout.ms"] = int(k.request_timeout_s * 1000)
        # The partitioner of the Java client, kafka-python and aiokafka: a key lands in
        # the same partition whoever writes it (co-partitioned topics rely on it).
        conf["partitioner"] = "murmur2_random"
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
        conf["sasl.username"] = k.sasl_username or ""
        conf["sasl.password"] = k.sasl_password.get_secret_value() if k.sasl_password else ""
    conf.update(_ssl_files(k, "ssl.ca.location", "ssl.certificate.location", "ssl.key.location"))
    return conf


def acked_producer(k: KafkaSettings) -> Producer:
    """A librdkafka producer for outputs that must not be lost: idempotent, ``acks=all``,
    delivery reports for failed records only (the caller's ``on_delivery`` sees errors).

    Callers produce, then ``flush`` and check the reports before they commit their input.
    """
    from confluent_kafka import Producer

    conf = rdkafka_conf(k, "producer")
    conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                 "delivery.report.only.error": True,
                 "batch.size": 1 << 20, "queue.buffering.max.messages": 200_000})
    return Producer(conf)


# A consumer fenced again within REFENCED_S of its replacement fails its stage or ends
# its sink: two live processes with the same kafka.group_instance_id, which would
# otherwise fence each other in a loop (StageRunner._replace_consumer, the sink's
# _check_member).
REFENCED_S = 60.0
# A fencing within OWN_REJOIN_S after the consumer's on_lost (its session timed out on
# its side) is librdkafka's own rejoin (issue 3437), not another process with the same
# group.instance.id: it is not counted for REFENCED_S (seen: a stage self-fenced twice
# within a minute on a starved machine after a broker restart, which ended the worker).
# Fenced by another process, a consumer gets no on_lost first.
OWN_REJOIN_S = 2.0


def refenced(now: float, session_lost_at: float | None, fenced_at: float | None
             ) -> tuple[bool, float | None]:
    """The verdict on a consumer fenced at ``now`` (stage and sink alike): ``(own_rejoin,
    again_s)``. ``own_rejoin``: within ``OWN_REJOIN_S`` after its ``on_lost``,
    librdkafka's own rejoin, which the caller does not record as a fencing by another.
    ``again_s`` (else None): not that, and this many seconds, under ``REFENCED_S``, after
    the last fencing recorded (``fenced_at``): two live processes with one
    group.instance.id; the caller fails instead of replacing."""
    own = session_lost_at is not None and now - session_lost_at < OWN_REJOIN_S
    if own or fenced_at is None or now - fenced_at >= REFENCED_S:
        return own, None
    return own, now - fenced_at


def check_broker(producer: Any, k: KafkaSettings, topic: str, timeout_s: float,
                 what: str) -> None:
    """Ask for ``topic``'s metadata (librdkafka connects lazily): no broker answering
    within ``timeout_s`` is our KafkaError, naming ``what`` and the addresses."""
    from .rdkafka import KafkaException

    try:
        producer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaError(f"{what}no Kafka broker answered at "
                            f"{','.join(k.bootstrap_servers)}: {exc}") from exc


def is_fatal(err: Any) -> bool:
    """Whether a consumer's error event means the consumer is unusable for good: the
    error says so, or it is librdkafka's ``_FATAL`` (a consumer fenced by the broker
    raises that event with ``fatal()`` False, as seen with confluent-kafka 2.16)."""
    from .rdkafka import KafkaError

    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def fatal_consumer_error(err: Any, who: str, group: str) -> str:
    """The message for a fatal error of a group consumer: librdkafka's text, and what to
    do when the broker fenced it because another live consumer of ``group`` uses the
    same ``group.instance.id`` (``kafka.group_instance_id``)."""
    text = str(err)
    if "fenced" in text.lower() or "FENCED_INSTANCE_ID" in text:
        return (f"{who}: fenced in group {group} (static membership: its own rejoin "
                f"after a session timeout, or another live process with the same "
                f"kafka.group_instance_id; each worker and sink process needs its own): "
                f"{text}")
    return f"{who}: fatal consumer error in group {group}: {text}"


def discard_producer(producer: Producer) -> None:
    """Drop what ``producer`` still holds and close it (after a failure: best effort)."""
    try:
        producer.purge()
        producer.flush(0)
        producer.close()
    except Exception as exc:  # it failed already
        logging.getLogger(__name__).debug("discarding a producer: %r", exc)


def _ssl_files(k: KafkaSettings, ca: str, cert: str, key: str) -> dict[str, str]:
    """The TLS files that are set, under the option names of one client."""
    return {name: str(path) for name, path in
            ((ca, k.ssl_cafile), (cert, k.ssl_certfile), (key, k.ssl_keyfile)) if path}


def kafka_python_kwargs(k: KafkaSettings) -> dict[str, Any]:
    kw = k.client_kwargs()
    kw["client_id"] = k.client_id
    kw["request_timeout_ms"] = int(k.request_timeout_s * 1000)
    # kafka-python backs off reconnecting up to 30 s by default: after a broker stop of a
    # minute its clients were seen sending nothing for 17 s after the broker was back.
    # 1 s, as the Java client's default.
    kw["reconnect_backoff_max_ms"] = 1000
    kw.update(_ssl_files(k, "ssl_cafile", "ssl_certfile", "ssl_keyfile"))
    return kw


def aiokafka_kwargs(k: KafkaSettings) -> dict[str, Any]:
    kw = k.client_kwargs()
    kw["client_id"] = k.client_id
    kw["request_timeout_ms"] = int(k.request_timeout_s * 1000)
    ctx = k.ssl_context()
    if ctx is not None:
        kw["ssl_context"] = ctx
    return kw


def admin_client(k: KafkaSettings):  # type: ignore[no-untyped-def]
    """A kafka-python admin client; KafkaError when no broker answers."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError as _KE

    try:
        return KafkaAdminClient(**kafka_python_kwargs(k))
    except _KE as exc:
        raise KafkaError(
            f"no Kafka broker answered at {','.join(k.bootstrap_servers)}: {exc}"
        ) from exc
