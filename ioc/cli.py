"""The ``ioc`` command. Each domain adds its command group to ``main`` below, explicitly."""

from __future__ import annotations

import logging
import sys
import uuid

import click

from .config import Settings, load_settings
from .errors import ConfigError, IOCError

__all__ = ["main"]


class Ctx:
    """Lazily loaded settings shared by subcommands."""

    def __init__(self, config: str | None, namespace: str | None) -> None:
        self.config = config
        self.namespace = namespace
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"namespace": self.namespace} if self.namespace else None
            self._settings = load_settings(self.config, overrides=overrides)
        return self._settings


pass_ctx = click.make_pass_decorator(Ctx)


class _Group(click.Group):
    """Turns project errors into one clear line and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: configuration: {exc}", err=True)
            sys.exit(2)
        except IOCError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", envvar="IOC_CONFIG", type=click.Path(dir_okay=False),
              help="YAML settings file (default: $IOC_CONFIG, else built-in defaults + IOC_* env).")
@click.option("-n", "--namespace", help="Override the namespace (topic prefix and DB schema).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="ioc-streams")
@click.pass_context
def main(ctx: click.Context, config: str | None, namespace: str | None, verbose: int) -> None:
    """Streaming backend for city operations centers.

    Events and camera frames enter Kafka, Faust workers validate, aggregate and analyse
    them, results land in PostgreSQL/TimescaleDB, and a websocket server feeds the video
    wall. Settings come from a YAML file and IOC_* environment variables
    (IOC_KAFKA__BOOTSTRAP_SERVERS=host:9092 sets kafka.bootstrap_servers).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Ctx(config, namespace)


# -- config ------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Check and show settings."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE (plus IOC_* environment); print every problem with its key path.

    Exits 0 when valid, 2 when not.
    """
    try:
        s = load_settings(file)
    except ConfigError as exc:
        click.echo(f"{file}: {len(exc.problems)} problem(s)", err=True)
        for path, msg in exc.problems:
            click.echo(f"  {path}: {msg}", err=True)
        sys.exit(2)
    click.echo(f"{file}: ok (namespace {s.namespace!r})")


@config.command("show")
@pass_ctx
def config_show(c: Ctx) -> None:
    """Print the effective settings as YAML (secrets masked)."""
    import yaml

    data = c.settings.model_dump(mode="json")
    click.echo(yaml.safe_dump(data, sort_keys=False))


# -- topics ------------------------------------------------------------------------------


@main.group()
def topics() -> None:
    """The topic catalogue."""


@topics.command("list")
@pass_ctx
def topics_list(c: Ctx) -> None:
    """List the catalogue's topics for the namespace."""
    for t in c.settings.topics.catalogue():
        ret = "forever" if t.retention_ms is None else f"{t.retention_ms // 3_600_000}h"
        click.echo(f"{t.name(c.settings.namespace):32} p={t.partitions:<2} {t.cleanup_policy:8} "
                   f"{ret:8} key={t.key}; {t.description}")


@topics.command("ensure")
@click.option("--check-only", is_flag=True, help="Create nothing; report missing topics.")
@pass_ctx
def topics_ensure(c: Ctx, check_only: bool) -> None:
    """Create missing topics; report those that exist with other settings (exit 1)."""
    from .kafka import ensure_topics

    report = ensure_topics(c.settings, create=not check_only)
    for line in report.lines():
        click.echo(line)
    if not report.success:
        sys.exit(1)


# -- database ----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@pass_ctx
def db_migrate(c: Ctx) -> None:
    """Apply pending migrations to the namespace's schema."""
    from .storage import migrate

    features, ran = migrate(c.settings)
    click.echo(f"storage: {features.describe()}")
    click.echo(f"schema {c.settings.db_schema}: applied {len(ran)} migration(s)"
               + "".join(f"\n  {m.version:04d} {m.name}" for m in ran))


@db.command("status")
@pass_ctx
def db_status(c: Ctx) -> None:
    """Show the storage path (TimescaleDB or plain) and applied migrations."""
    from .storage import applied_versions, connect, detect_features
    from .storage.migrations import MIGRATIONS

    with connect(c.settings.database, autocommit=True) as conn:
        features = detect_features(conn, "off" if c.settings.database.timescaledb == "off" else "auto")
        done = set(applied_versions(conn, c.settings.db_schema))
    click.echo(f"storage: {features.describe()}")
    for m in MIGRATIONS:
        click.echo(f"  {'applied' if m.version in done else 'PENDING'}  {m.version:04d} {m.name}")


# -- workers -----------------------------------------------------------------------------


@main.command()
@click.option("--agents", default="", help="Comma-separated agent names (default: all).")
@click.option("--loglevel", default=None, help="Faust log level (default: streams.log_level).")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.worker, 9401; 0: any free).")
@pass_ctx
def worker(c: Ctx, agents: str, loglevel: str | None, metrics_port: int | None) -> None:
    """Run the stream worker: Faust agents (probe, vision, camera_health) and batch stages
    (validate, aggregate, kpis, scorecards, rules, tiles). Scale out by starting N identical
    workers (every stage in each; `IOC_WORKERS=N make up`): each agent and stage group
    shares its partitions among them, and a killed worker's partitions move to the others.

    --agents runs a subset (tests, benches). Workers of one namespace must all run the
    same agents: stages sharing a process share one consumer group named after them
    (aggregate+kpis+rules), so a worker with another subset would read the same
    partitions again in a group of its own.

    Agents: probe, validate, vision, camera_health, aggregate, kpis, scorecards, rules, tiles
    (scorecards runs only when scorecards.indicators are configured).
    """
    from streams.app import run_worker, select_agents

    try:
        chosen = select_agents(agents)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    sys.argv = [sys.argv[0]]  # faust's Worker reads argv; give it none of ours
    run_worker(c.settings, chosen, loglevel=loglevel, metrics_port=metrics_port)


@main.command()
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the probe reply.")
@click.option("--no-worker", is_flag=True, help="Only check Kafka and PostgreSQL, not a worker.")
@pass_ctx
def health(c: Ctx, timeout: float, no_worker: bool) -> None:
    """Check Kafka, PostgreSQL and (through the probe agent) a running worker."""
    from .health import check_database, check_kafka, probe_worker

    s = c.settings
    ok = True
    for name, fn in (("kafka", check_kafka), ("postgresql", check_database)):
        try:
            click.echo(f"{name:11} ok    {fn(s)}")
        except IOCError as exc:
            ok = False
            click.echo(f"{name:11} FAIL  {exc}")
    if not no_worker and ok:
        try:
            rtt = probe_worker(s, timeout=timeout, probe_id=uuid.uuid4().hex)
            click.echo(f"{'worker':11} ok    probe echoed in {rtt * 1000:.0f} ms")
        except IOCError as exc:
            ok = False
            click.echo(f"{'worker':11} FAIL  {exc}")
    if not ok:
        sys.exit(1)


@main.command()
@click.option("--once", is_flag=True, help="Print one frame and exit: 1 when a service is down.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds between frames; also the window of the rates.")
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="Seconds to wait for each service's whole /metrics answer.")
@pass_ctx
def status(c: Ctx, once: bool, interval: float, timeout: float) -> None:
    """One refreshing screen of every service (worker, sink, gateway, wall, camera, feeds):
    up or down, events in and out per second, consumer lag, dead letters, drops, the oldest
    wall tile. Read from each service's /metrics on the ports of settings.metrics.
    """
    from .status import run_status

    sys.exit(run_status(c.settings, once=once, interval=interval, timeout=timeout))


def _register_domain_commands() -> None:
    # Domain command groups, listed explicitly (no discovery). Each domain adds its line.
    from .cameras_cli import camera
    from .feeds.cli import feeds
    from .gateway.cli import gateway
    from .replay.cli import register as register_replay
    from .storage.sink_cli import sink
    from .wall.cli import wall

    for group in (gateway, sink, feeds, camera, wall):
        main.add_command(group)
    register_replay(main)  # record, replay, runs


_register_domain_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
