"""A stage's fenced consumer: librdkafka's own rejoin is told apart from another process.

``StageRunner._replace_consumer`` fails the stage when it is fenced again within
``REFENCED_S`` (two live processes with one ``kafka.group_instance_id`` would fence each
other in a loop), except when the fencing comes within ``OWN_REJOIN_S`` after
``on_lost``: the stage's own session had timed out, and librdkafka's rejoin fenced the
commit still under way (librdkafka issue 3437). The real-broker impostor case is
``test_a_fenced_static_member_replaces_its_consumer_and_counts_exactly``
(tests/integration/test_stage_rebalance.py): there no ``on_lost`` comes first.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from ioc.config import Settings
from streams.engine import Outbox, Stage, StageRunner

NS = "tfence"

FENCED = KafkaError(KafkaError.FENCED_INSTANCE_ID, "Static consumer fenced", fatal=True)


def _runner(monkeypatch: Any) -> StageRunner:
    stage = Stage("fenced", [f"{NS}.in"], lambda records, out: None)
    runner = StageRunner(Settings(namespace=NS), f"{NS}-app", stage)
    made: list[Any] = []

    class _Consumer:  # librdkafka's Consumer, never connected
        def __init__(self, conf: dict[str, Any]) -> None:
            made.append(self)

        def subscribe(self, topics: list[str], **kw: Any) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr("streams.engine.runner.Consumer", _Consumer)
    runner.consumer = _Consumer({})
    return runner


def test_fenced_twice_by_another_process_fails_the_stage(monkeypatch: Any) -> None:
    runner = _runner(monkeypatch)
    runner._replace_consumer(FENCED, Outbox())
    assert runner.stage.metrics.consumer_restarts == 1
    with pytest.raises(KafkaException, match="after the last replacement"):
        runner._replace_consumer(FENCED, Outbox())


def test_fenced_by_its_own_rejoin_after_a_session_timeout_is_replaced_again(
        monkeypatch: Any) -> None:
    runner = _runner(monkeypatch)
    runner._replace_consumer(FENCED, Outbox())  # fenced by another: counted
    for n in (2, 3):  # then twice its own rejoin, each right after its session timed out
        runner._on_lost(None, [])
        runner._replace_consumer(FENCED, Outbox())
        assert runner.stage.metrics.consumer_restarts == n
    # 10 s later, another process again, still within REFENCED_S of the first fencing
    # counted: the stage fails
    assert runner._session_lost_at is not None
    runner._session_lost_at -= 10
    with pytest.raises(KafkaException, match="after the last replacement"):
        runner._replace_consumer(FENCED, Outbox())


def test_an_old_session_loss_does_not_excuse_a_fencing(monkeypatch: Any) -> None:
    runner = _runner(monkeypatch)
    runner._on_lost(None, [])
    assert runner._session_lost_at is not None
    runner._session_lost_at -= 10  # on_lost 10 s ago
    runner._replace_consumer(FENCED, Outbox())
    with pytest.raises(KafkaException, match="after the last replacement"):
        runner._replace_consumer(FENCED, Outbox())
