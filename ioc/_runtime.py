"""Process-wide settings of the event-rate services (worker, sink)."""

from __future__ import annotations

import gc

__all__ = ["service_start", "tune_gc"]


def tune_gc() -> None:
    """Run Python's cyclic garbage collector far less often, and never over start-up objects.

    The stages hold hundreds of thousands of long-lived objects (window aggregates, state
    caches, tile series); with the default thresholds (700, 10, 10) every few thousand
    allocations a collection walks them, which cost the aggregate/tiles worker ~25% of
    its CPU (93-97 -> 68-71 µs per event in bench_events A/B runs). Almost everything
    these services allocate is freed by reference counting anyway; the collector only
    has to find the rare reference cycle, and finding it later costs a little memory.
    ``gc.freeze`` moves what start-up allocated (modules, settings, clients) out of the
    collector's sight for good.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def service_start() -> None:
    """What the worker and the sink do at start: repeated Kafka client log lines
    throttled, and the garbage collector tuned. (The wall and the gateway only throttle
    the log lines: their GC was not measured.)"""
    from .kafka.clients import quiet_kafka_client_logs

    quiet_kafka_client_logs()
    tune_gc()
