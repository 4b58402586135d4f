"""``create_app(settings)``: the Faust app, built on demand with an explicit list of agents.

No app exists at import time and nothing is autodiscovered: the agents registered are
exactly the ``AgentSpec``s passed in (default: ``DEFAULT_AGENTS``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faust

import ioc.kafka.aio  # noqa: F401  (bounds Faust's forced metadata updates: its docstring)
from ioc._runtime import service_start
from ioc.config import Settings, default_state_dir

from .agent_spec import AgentSpec

__all__ = ["AGENTS_BY_NAME", "DEFAULT_AGENTS", "AgentSpec", "create_app", "faust_broker_url", "run_worker", "select_agents"]

log = logging.getLogger(__name__)


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{hp}" for hp in settings.kafka.bootstrap_servers)


def _credentials(settings: Settings):  # type: ignore[no-untyped-def]
    k = settings.kafka
    ctx = k.ssl_context()
    if k.sasl_mechanism:
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def create_app(settings: Settings, agents: Sequence[AgentSpec] | None = None) -> faust.App:
    """Build the Faust app for ``settings.namespace`` and register ``agents``."""
    if agents is None:
        agents = DEFAULT_AGENTS
    s = settings.streams
    app_id = s.app_id or f"{settings.namespace}-streams"
    data_dir = s.data_dir or (default_state_dir() / "faust" / app_id)
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=faust_broker_url(settings),
        broker_credentials=_credentials(settings),
        autodiscover=False,
        store="memory://",  # tables are rebuilt from their changelog topics on start
        value_serializer="raw",
        key_serializer="raw",
        datadir=str(data_dir),
        web_enabled=s.web_enabled,
        web_bind="127.0.0.1",
        web_port=s.web_port,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        stream_wait_empty=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        broker_session_timeout=s.session_timeout_s,
        producer_linger=s.producer_linger_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
    )
    for spec in agents:
        spec.register(app, settings)
    log.info("faust app %s with agents: %s", app_id, ", ".join(a.name for a in agents))
    return app


def run_worker(settings: Settings, agents: Sequence[AgentSpec] | None = None, *,
               loglevel: str | None = None, metrics_port: int | None = None) -> None:
    """Run a Faust worker in this process until SIGTERM/SIGINT, with its /metrics
    (``metrics.worker``, or ``metrics_port``: see ``ioc.metrics.start_metrics``).

    Raises:
        ConfigError: the metrics port cannot be bound.
    """
    from ioc.metrics import ConsumerLag, start_metrics
    from ioc.metrics.cameras import AnalysisCollector
    from ioc.metrics.stages import StagesCollector, stage_groups

    app = create_app(settings, agents)
    start_metrics(settings, "worker", [
        StagesCollector(app), AnalysisCollector(app, [c.id for c in settings.cameras.cameras]),
        ConsumerLag(settings, lambda: stage_groups(app))], port=metrics_port)
    worker = faust.Worker(app, loglevel=(loglevel or settings.streams.log_level).lower(), quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG (so every library builds a
    # record for every debug call: ~5-8% of a busy worker's CPU) and writes escape codes.
    worker.spinner = None
    service_start()
    # kill -USR2 <pid>: every thread's stack to stderr, even with the event loop blocked
    # (Faust's own SIGUSR1 handler runs on the loop and also lists the asyncio tasks).
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR2, all_threads=True)
    worker.execute_from_commandline()


def _default_agents() -> list[AgentSpec]:
    # The explicit list of agents a plain `ioc worker` runs. Add new agents here.
    from .aggregate import AGGREGATE
    from .camera_health_agent import CAMERA_HEALTH
    from .kpis import KPIS
    from .probe import PROBE
    from .rules import RULES
    from .scorecards import SCORECARDS
    from .tiles import TILES
    from .validate import VALIDATE
    from .vision_agent import VISION

    return [PROBE, VALIDATE, VISION, CAMERA_HEALTH, AGGREGATE, KPIS, SCORECARDS, RULES, TILES]


DEFAULT_AGENTS: list[AgentSpec] = _default_agents()

AGENTS_BY_NAME: dict[str, AgentSpec] = {a.name: a for a in DEFAULT_AGENTS}


def select_agents(names: str) -> list[AgentSpec] | None:
    """The agents named in a comma-separated list; None (all) for an empty one.

    Raises:
        ValueError: naming the unknown agents and the known ones.
    """
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        return None
    unknown = [n for n in wanted if n not in AGENTS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown agent(s) {unknown}; known: {sorted(AGENTS_BY_NAME)}")
    return [AGENTS_BY_NAME[n] for n in wanted]
