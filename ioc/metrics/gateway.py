"""Collector of the HTTP gateway: reads ``GatewayMetrics`` and the answer counts at scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import REASONS
from ._registry import histogram_family, snapshot_items

__all__ = ["REJECT_REASONS", "GatewayCollector"]

#: Every reason an event is rejected with (label values of
#: ``ioc_gateway_events_rejected_total``); anything else is exported as ``other``.
REJECT_REASONS = frozenset({*REASONS, "unsupported_type", "source_not_allowed",
                            "source_mismatch", "invalid", "not_acknowledged", "other"})


class GatewayCollector(Collector):
    """Metrics of one gateway (``state``: ``ioc.gateway._app.gateway_state(app)``)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        gw = self.state
        m = gw.metrics
        req = CounterMetricFamily("ioc_gateway_requests", "HTTP answers by route and status",
                                  labels=["route", "status"])
        for (route, status), n in sorted(snapshot_items(gw.answers)):
            req.add_metric([route, str(status)], n)
        yield req
        yield histogram_family("ioc_gateway_request_seconds", "seconds from the request's "
                               "headers to its answer", ["route"],
                               sorted(([r], h) for r, h in snapshot_items(gw.latency)))
        yield CounterMetricFamily("ioc_gateway_events_accepted", "events acknowledged by "
                                  "the broker", value=m.accepted)
        rej = CounterMetricFamily("ioc_gateway_events_rejected", "events answered "
                                  "'rejected', by reason", labels=["reason"])
        by_reason: dict[str, int] = {}
        for reason, n in snapshot_items(gw.rejections):
            key = reason if reason in REJECT_REASONS else "other"
            by_reason[key] = by_reason.get(key, 0) + n
        for reason, n in sorted(by_reason.items()):
            rej.add_metric([reason], n)
        yield rej
        yield CounterMetricFamily("ioc_gateway_broker_unavailable", "requests answered 503 "
                                  "because the broker did not acknowledge", value=m.unavailable)
        yield GaugeMetricFamily("ioc_gateway_open_connections", "client connections open",
                                value=m.connections_open)
        t = CounterMetricFamily("ioc_gateway_timeouts", "requests answered 408 because "
                                "their headers or body did not arrive in time",
                                labels=["phase"])
        t.add_metric(["header"], m.header_timeouts)
        t.add_metric(["body"], m.body_timeouts)
        yield t
        yield CounterMetricFamily("ioc_gateway_connections_refused", "connections closed at "
                                  "once because gateway.max_connections were open",
                                  value=m.connections_refused)
