"""``ioc runs``: start, finish, list and compare pipeline runs over replay namespaces."""

from __future__ import annotations

import sys

import click

from ..cli import Ctx, pass_ctx
from ..config import load_settings

__all__ = ["runs_group"]


@click.group("runs")
def runs_group() -> None:
    """Pipeline runs over replay namespaces, with other settings, and their comparison.

    The registry is the 'runs' table of the live namespace (-n / config); each run has
    its own namespace, so its topics, rows and tiles never mix with live ones.
    """


@runs_group.command("start")
@click.option("--namespace", "run_ns", required=True, metavar="NAMESPACE",
              help="The run's namespace (e.g. the target of 'ioc replay'); not the live one.")
@click.option("--config", "run_config", type=click.Path(exists=True, dir_okay=False),
              help="Settings of the run (YAML), e.g. another motion threshold or rule set. "
                   "Default: the live settings.")
@click.option("--label", default="", help="A few words on what this run tries.")
@click.option("--no-worker", is_flag=True, help="Only register; start workers yourself "
              "(ioc -n NAMESPACE -c FILE worker).")
@click.option("--agents", default="", help="Comma-separated agents for the worker (default: all).")
@click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              metavar="N", help="The worker's /metrics port; 0: any free port (printed), "
              "since a run's worker usually runs beside the live one on metrics.worker.")
@pass_ctx
def runs_start(c: Ctx, run_ns: str, run_config: str | None, label: str, no_worker: bool,
               agents: str, metrics_port: int) -> None:
    """Register a run of NAMESPACE with --config's settings, then run the worker on it
    in the foreground (until SIGINT/SIGTERM) and mark the run finished or failed."""
    from .runs import finish_run, start_run

    registry = c.settings
    run = load_settings(run_config, overrides={"namespace": run_ns}) if run_config \
        else registry.with_namespace(run_ns)
    rec = start_run(registry, run, label=label, source={"config": run_config or "(live settings)"})
    click.echo(f"run {rec.id} in namespace {rec.namespace}")
    for k, (a, b) in sorted(rec.settings_diff.items()):
        click.echo(f"  setting {k}: {a!r} -> {b!r}")
    if no_worker:
        return
    from streams.app import run_worker, select_agents

    try:
        chosen = select_agents(agents)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    status = "failed"
    try:
        sys.argv = [sys.argv[0]]  # faust's Worker reads argv
        run_worker(run, chosen, metrics_port=metrics_port)
        status = "finished"
    except SystemExit as exc:
        status = "finished" if exc.code in (0, None) else "failed"
        raise
    finally:
        finish_run(registry, rec.id, status=status)


@runs_group.command("finish")
@click.argument("run")
@click.option("--failed", is_flag=True, help="Mark it failed instead of finished.")
@click.option("--note", default="", help="Why, or what was seen.")
@pass_ctx
def runs_finish(c: Ctx, run: str, failed: bool, note: str) -> None:
    """Mark RUN (id or namespace) finished."""
    from .runs import finish_run, resolve_run

    rec = finish_run(c.settings, resolve_run(c.settings, run).id,
                     status="failed" if failed else "finished", note=note)
    click.echo(f"run {rec.id}: {rec.status}")


@runs_group.command("list")
@pass_ctx
def runs_list(c: Ctx) -> None:
    """List registered runs, newest first."""
    from .runs import list_runs

    for r in list_runs(c.settings):
        diff = ", ".join(f"{k}={b!r}" for k, (_a, b) in sorted(r.settings_diff.items())) or "live settings"
        click.echo(f"{r.id}  {r.namespace:20} {r.status:9} {r.started_at:%Y-%m-%d %H:%M}  "
                   f"{r.label}  [{diff}]")


@runs_group.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--max-rows", default=40, show_default=True, help="Differences printed at most.")
@pass_ctx
def runs_compare(c: Ctx, a: str, b: str, max_rows: int) -> None:
    """Print the differences between runs (or namespaces) A and B: counts per camera and
    zone, window aggregates, KPI values, alerts; says which tables are absent.

    Exit 0 when everything compared is the same, 1 when anything differs or is absent.
    """
    from .compare import compare_namespaces, format_report
    from .runs import list_runs

    by = {}
    for r in list_runs(c.settings):
        by[r.id] = r.namespace
    ns_a, ns_b = by.get(a, a), by.get(b, b)
    sections = compare_namespaces(c.settings, ns_a, ns_b)
    for line in format_report(ns_a, ns_b, sections, max_rows=max_rows):
        click.echo(line)
    if not all(s.same for s in sections):
        sys.exit(1)
