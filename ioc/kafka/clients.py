"""Client options from settings, in the shapes kafka-python and aiokafka expect."""

from __future__ import annotations

from typing import Any

from ..config import KafkaSettings
from ..errors import KafkaError

__all__ = ["admin_client", "aiokafka_kwargs", "kafka_python_kwargs"]


def kafka_python_kwargs(k: KafkaSettings) -> dict[str, Any]:
    kw = k.client_kwargs()
    kw["client_id"] = k.client_id
    kw["request_timeout_ms"] = int(k.request_timeout_s * 1000)
    if k.ssl_cafile:
        kw["ssl_cafile"] = str(k.ssl_cafile)
    if k.ssl_certfile:
        kw["ssl_certfile"] = str(k.ssl_certfile)
    if k.ssl_keyfile:
        kw["ssl_keyfile"] = str(k.ssl_keyfile)
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
