"""The HTTP gateway for city systems that cannot speak Kafka (``ioc gateway``)."""

from ._app import GatewayMetrics, create_gateway_app
from ._auth import Caller, KeyRing, hash_key, new_key
from ._server import GatewayServer, serve

__all__ = ["Caller", "GatewayMetrics", "GatewayServer", "KeyRing", "create_gateway_app",
           "hash_key", "new_key", "serve"]
