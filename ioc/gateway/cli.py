"""``ioc gateway``: run the HTTP gateway; ``ioc gateway key``: make a publisher key."""

from __future__ import annotations

import click

__all__ = ["gateway"]


@click.group("gateway", invoke_without_command=True)
@click.option("--host", default=None, help="Bind address (default: gateway.host, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port (default: gateway.port, 8080).")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.gateway, 9403; 0: any free).")
@click.pass_context
def gateway(ctx: click.Context, host: str | None, port: int | None,
            metrics_port: int | None) -> None:
    """Run the HTTP gateway: POST events (JSON envelopes or NGSI-LD) into Kafka.

    Publishers authenticate with API keys whose SHA-256 is in gateway.publishers;
    create one with 'ioc gateway key'. Binds to loopback unless told otherwise.
    """
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import logging

    from ._server import serve

    s = ctx.obj.settings
    h = host or s.gateway.host
    p = s.gateway.port if port is None else port
    if not s.gateway.publishers:
        logging.getLogger(__name__).warning(
            "gateway.publishers is empty: every request will get 401 (see 'ioc gateway key')")
    g = s.gateway
    click.echo(f"gateway on http://{h}:{p} -> {s.namespace}.events.raw "
               f"({len(g.publishers)} publisher(s); timeouts: headers {g.header_timeout_s:g} s, "
               f"body {g.body_timeout_s:g} s; at most {g.max_connections} connections)")
    from ..kafka.clients import quiet_kafka_client_logs

    quiet_kafka_client_logs()
    asyncio.run(serve(s, host=h, port=p, metrics_port=metrics_port))


@gateway.command("key")
@click.option("--publisher", required=True, help="Publisher id (e.g. traffic-center).")
@click.option("--sources", required=True,
              help="Comma-separated sources the publisher may publish for ('*' for any).")
def key(publisher: str, sources: str) -> None:
    """Print a new API key (give it to the publisher) and the settings entry to add.

    Only the SHA-256 of the key goes into the settings; the key itself is shown once.
    """
    import yaml

    from ._auth import hash_key, new_key

    srcs = [x.strip() for x in sources.split(",") if x.strip()]
    if not srcs:
        raise click.BadParameter("name at least one source", param_hint="--sources")
    k = new_key()
    click.echo(f"API key for {publisher} (shown once; send it as 'Authorization: Bearer <key>'):")
    click.echo(f"  {k}")
    click.echo("Add to your settings file:")
    entry = {"gateway": {"publishers": {publisher: {"key_sha256": hash_key(k),
                                                    "sources": srcs}}}}
    click.echo(yaml.safe_dump(entry, sort_keys=False).rstrip())
