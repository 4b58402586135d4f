"""Prometheus metrics of the long-running services (docs/metrics.md lists every metric).

Each service builds a registry of its own (``service_registry``: process_*, python_*,
``ioc_build_info``) plus custom collectors that read the service's existing counter
objects *at scrape time* (``GatewayCollector``, ``SinkCollector``, ``StagesCollector``,
``WallCollector``, ``CameraCollector``, ``FeedCollector``), so the hot paths keep their
plain integer increments; latencies are ``ioc.metrics.hist.Histogram``s observed in
place. ``start_metrics(settings, service, collectors, port=...)`` serves them on
``http://<metrics.host>:<port>/metrics`` in a daemon thread. ``ConsumerLag`` exports
``ioc_consumer_lag`` from a cache that a thread of its own refreshes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hist import LATENCY_BUCKETS_S, SIZE_BUCKETS_BYTES, Histogram

if TYPE_CHECKING:
    from ._lag import ConsumerLag
    from ._registry import SERVICES, BuildInfo, histogram_family, service_registry, version
    from ._server import MetricsEndpoint, start_metrics

# Imported on first use: the services' hot modules import ``Histogram`` from here (via
# ``ioc.metrics.hist``) and need neither prometheus_client nor the settings for it.
_LAZY = {"ConsumerLag": "_lag", "SERVICES": "_registry", "BuildInfo": "_registry",
         "histogram_family": "_registry", "service_registry": "_registry",
         "version": "_registry", "MetricsEndpoint": "_server", "start_metrics": "_server"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value

__all__ = [
    "LATENCY_BUCKETS_S",
    "SERVICES",
    "SIZE_BUCKETS_BYTES",
    "BuildInfo",
    "ConsumerLag",
    "Histogram",
    "MetricsEndpoint",
    "histogram_family",
    "service_registry",
    "start_metrics",
    "version",
]
