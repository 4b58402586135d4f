"""A registry per service: the library's process/platform/GC collectors plus build info."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .hist import Histogram

__all__ = ["SERVICES", "BuildInfo", "histogram_family", "service_registry", "snapshot_items",
           "version"]

#: The services that serve /metrics: each is a key of the ``metrics`` settings section.
SERVICES = ("worker", "sink", "gateway", "wall", "camera", "feeds")


def version() -> str:
    """The installed version of ioc-streams ("unknown" when not installed)."""
    try:
        return metadata.version("ioc-streams")
    except metadata.PackageNotFoundError:
        return "unknown"


class BuildInfo(Collector):
    """``ioc_build_info{version, service, namespace} 1``."""

    def __init__(self, service: str, namespace: str) -> None:
        self.labels = [version(), service, namespace]

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("ioc_build_info", "version of ioc-streams, the service and its "
                              "namespace (always 1)", labels=["version", "service", "namespace"])
        g.add_metric(self.labels, 1.0)
        yield g


def service_registry(service: str, namespace: str,
                     collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """A fresh registry (never the library's global one, so two services or two tests in
    one process never collide) holding process_*, python_*, ``ioc_build_info`` and
    ``collectors``."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    reg.register(BuildInfo(service, namespace))
    for c in collectors:
        reg.register(c)
    return reg


def histogram_family(name: str, doc: str, labels: list[str],
                     items: Iterable[tuple[list[str], Histogram]]) -> HistogramMetricFamily:
    """A Prometheus histogram family from ``(label values, Histogram)`` pairs."""
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in items:
        fam.add_metric(values, buckets=h.cumulative(), sum_value=h.sum)
    return fam


def snapshot_items(d: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """``list(d.items())``, retried when another thread changes ``d`` meanwhile."""
    for _ in range(10):
        try:
            return list(d.items())
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return []
