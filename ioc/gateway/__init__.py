"""The HTTP gateway for city systems that cannot speak Kafka (``ioc gateway``)."""

from ._app import GatewayMetrics, create_gateway_app
from ._auth import Caller, KeyRing, hash_key, new_key

__all__ = ["Caller", "GatewayMetrics", "KeyRing", "create_gateway_app", "hash_key", "new_key"]
