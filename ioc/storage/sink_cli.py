"""``ioc sink``: run the batched, idempotent Kafka -> PostgreSQL writers."""

from __future__ import annotations

import asyncio

import click

__all__ = ["sink"]


@click.command("sink")
@click.option("--tables", default="", metavar="NAMES",
              help="Comma-separated sink names (default: all; see --list).")
@click.option("--list", "list_only", is_flag=True, help="List the known sinks and exit.")
@click.option("--batch-rows", default=5000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Rows per COPY batch; a sink holds at most two batches in memory "
                   "(one being written while the next fills; see --drain-batch-rows).")
@click.option("--drain-batch-rows", default=20_000, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="While behind (each batch full before its linger ends), batches double "
                   "up to this many rows. A --first sink with this many records still to "
                   "store holds the others (caught up below --batch-rows).")
@click.option("--linger", default=0.5, show_default=True, type=click.FloatRange(0.0, 60.0),
              help="Seconds to wait for a batch to fill after its first message.")
@click.option("--retry-max", default=10.0, show_default=True, type=click.FloatRange(0.1, 600.0),
              help="Longest backoff in seconds between writes while the database is down "
                   "(cut short once it accepts a connection again, probed every second).")
@click.option("--stall-s", default=120.0, show_default=True, type=click.FloatRange(5.0, 3600.0),
              help="A sink whose Kafka or database call has not returned for this long is "
                   "stuck: the process logs why, dumps its thread stacks and exits with "
                   "code 70, for its supervisor to restart it.")
@click.option("--first", default="events", show_default=True, metavar="NAMES",
              help="Comma-separated sinks that go first: while one of them is behind (a "
                   "backlog after a database outage, say), the others wait, at most "
                   "90 s in a row; for 120 s after it caught up they also wait while it "
                   "has half of --batch-rows or more records still to store, and "
                   "together write at most half of the time (one at a time; after a "
                   "write of w s by any of them, all of them wait w s); '' for none.")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.sink, 9402; 0: any free).")
@click.pass_obj
def sink(c, tables: str, list_only: bool, batch_rows: int,  # type: ignore[no-untyped-def]
         drain_batch_rows: int, linger: float, retry_max: float, stall_s: float,
         first: str, metrics_port: int | None) -> None:
    """Write topics to PostgreSQL in COPY batches, idempotently, until SIGTERM.

    Kafka offsets are committed only after the rows are committed in the database.
    While the database is down, partitions are paused and everything stays in Kafka.
    A stuck sink exits with code 70 (see --stall-s); SIGUSR1 dumps every thread's
    stack to stderr.
    """
    from .sink import SinkOptions, exit_on_stall, run_sinks
    from .sink_tables import sink_tables

    known = {s.name: s for s in sink_tables()}
    if list_only:
        for s in known.values():
            click.echo(f"{s.name:12} {s.topic_suffix:16} -> {s.table:16} key {','.join(s.conflict)}"
                       f"  {s.description}")
        return
    names = [n.strip() for n in tables.split(",") if n.strip()] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown sink(s) {unknown}; known: {sorted(known)}",
                                 param_hint="--tables")
    first_names = tuple(n.strip() for n in first.split(",") if n.strip())
    if unknown := [n for n in first_names if n not in known]:
        raise click.BadParameter(f"unknown sink(s) {unknown}; known: {sorted(known)}",
                                 param_hint="--first")
    options = SinkOptions(batch_rows=batch_rows, drain_batch_rows=drain_batch_rows,
                          linger_s=linger, retry_max_s=retry_max, stall_s=stall_s,
                          first_tables=first_names)
    import faulthandler
    import signal

    from .._runtime import service_start
    from ..metrics import ConsumerLag, start_metrics
    from ..metrics.sink import SinkCollector, sink_groups

    service_start()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: stacks to stderr
    runners: list[object] = []  # filled by run_sinks, read by the collectors
    endpoint = start_metrics(c.settings, "sink", [
        SinkCollector(runners), ConsumerLag(c.settings, lambda: sink_groups(runners))],
        port=metrics_port)
    try:
        asyncio.run(run_sinks(c.settings, [known[n] for n in names], options,
                              on_stall=exit_on_stall, on_start=runners.extend))
    finally:
        if endpoint is not None:
            endpoint.close()
    from .sink import abandoned_consumers

    if abandoned_consumers():
        # A replaced consumer's call still runs in a thread that the interpreter would
        # wait for at exit, forever: the offsets are committed, so exit now.
        import logging
        import os

        logging.shutdown()
        os._exit(0)
