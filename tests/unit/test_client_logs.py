"""Repeated Kafka client log lines are let through once per period (pure: no broker)."""

from __future__ import annotations

import logging

from ioc.kafka.clients import quiet_kafka_client_logs


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_same_line_with_other_numbers_passes_once_and_other_lines_pass():
    quiet_kafka_client_logs()
    quiet_kafka_client_logs()  # idempotent: one filter per logger
    for name in ("ioc.rdkafka", "aiokafka.conn"):
        lg = logging.getLogger(name)
        assert sum(type(f).__name__ == "_Throttle" for f in lg.filters) == 1
        keep = _Keep()
        lg.addHandler(keep)
        try:
            for i in range(20):
                lg.error("FAIL [ioc#consumer-%d] [thrd:127.0.0.1:19092/bootstrap]: Connect to "
                         "127.0.0.1:19092 failed (after %dms)", i, i)
            lg.error("group session timed out")
        finally:
            lg.removeHandler(keep)
        assert len(keep.lines) == 2, keep.lines
        assert keep.lines[1] == "group session timed out"
