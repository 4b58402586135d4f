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

from ._lag import ConsumerLag
from ._registry import SERVICES, BuildInfo, histogram_family, service_registry, version
from ._server import MetricsEndpoint, start_metrics
from .hist import LATENCY_BUCKETS_S, SIZE_BUCKETS_BYTES, Histogram

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
