"""``ioc wall``: serve the video wall, issue screen tokens, produce demo tiles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time

import click

__all__ = ["wall"]

log = logging.getLogger(__name__)


def _parse_ttl(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise click.BadParameter(f"expected a duration like 90s, 30m, 12h or 7d, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@click.group()
def wall() -> None:
    """The video wall: websocket tile server, screen tokens, demo tiles."""


@wall.command("serve")
@click.option("--host", default=None, help="Bind address (default: wall.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: wall.port, 8765; 0: any free).")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), metavar="N",
              help="Serve /metrics on this port (default: metrics.wall, 9404; 0: any free).")
@click.pass_obj
def serve_cmd(c, host: str | None, port: int | None,  # type: ignore[no-untyped-def]
              metrics_port: int | None) -> None:
    """Serve the wall screens, the browser client and /healthz on one port.

    Rebuilds the latest version of every tile from <ns>.wall.tiles, then follows it.
    Several servers may run side by side; each reads all partitions. Stops on SIGTERM or
    Ctrl-C, closing clients with 1001 so their pages reconnect to another server.
    """
    from .server import WallServer

    s = c.settings
    if host is not None or port is not None:
        w = s.wall.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
        s = s.model_copy(update={"wall": w})

    async def main() -> None:
        from ..metrics import start_metrics
        from ..metrics.wall import WallCollector

        server = WallServer(s)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        await server.start()
        click.echo(f"wall: listening on http://{s.wall.host}:{server.port}/ "
                   f"(screens: {', '.join(s.wall.screens)}; namespace {s.namespace})", err=True)
        endpoint = start_metrics(s, "wall", [WallCollector(server)], port=metrics_port)
        try:
            await server.serve_forever_started()
        finally:
            if endpoint is not None:
                endpoint.close()
            await server.stop()

    from ..kafka.clients import quiet_kafka_client_logs

    quiet_kafka_client_logs()
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(main())


@wall.command("token")
@click.option("--screen", "screens", multiple=True, required=True,
              help="Screen the token opens (repeat for several; '*' for all).")
@click.option("--ttl", default=None, help="Lifetime, e.g. 12h, 30m, 7d (default: wall.token_ttl_s).")
@click.option("--subject", default="", help="Label recorded in the token (who or which display).")
@click.option("--role", type=click.Choice(["viewer", "operator"]), default="viewer",
              show_default=True,
              help="viewer: read-only; operator: may acknowledge, assign, comment, close "
                   "alerts and switch presets (needs --name).")
@click.option("--name", default=None,
              help="The operator's name (who actions are recorded as); same as --subject.")
@click.option("--url", "show_url", is_flag=True, help="Print the page URL with the token instead.")
@click.pass_obj
def token_cmd(c, screens: tuple[str, ...], ttl: str | None, subject: str, role: str,  # type: ignore[no-untyped-def]
              name: str | None, show_url: bool) -> None:
    """Issue a signed, expiring token for SCREEN(s) and print it.

    The key comes from wall.secret (IOC_WALL__SECRET) or the secret file in the state
    directory, created with mode 600 on first use. The key itself is never printed.
    An operator token: --role operator --name alice.
    """
    from .auth import TokenSigner, load_or_create_secret

    s = c.settings
    unknown = [x for x in screens if x != "*" and x not in s.wall.screens]
    if unknown:
        raise click.BadParameter(f"unknown screen(s) {unknown}; known: {sorted(s.wall.screens)}")
    if name is not None and subject and name != subject:
        raise click.BadParameter(f"--name {name!r} and --subject {subject!r} differ; give one")
    who = name if name is not None else subject
    if role == "operator" and not who.strip():
        raise click.BadParameter("an operator token needs --name (who actions are recorded as)",
                                 param_hint="--name")
    ttl_s = _parse_ttl(ttl) if ttl else s.wall.token_ttl_s
    try:
        token = TokenSigner(load_or_create_secret(s.wall)).issue(
            list(screens), ttl_s, subject=who, role=role)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if show_url:
        screen = next((x for x in screens if x != "*"), next(iter(s.wall.screens)))
        click.echo(f"http://{s.wall.host}:{s.wall.port}/?screen={screen}#token={token}")
    else:
        click.echo(token)


@wall.command("screens")
@click.pass_obj
def screens_cmd(c) -> None:  # type: ignore[no-untyped-def]
    """List the configured screens and their tiles."""
    for name, layout in c.settings.wall.screens.items():
        click.echo(f"{name}: {layout.title!r} {layout.columns}x{layout.rows}, "
                   f"{len(layout.tiles)} tiles, layout {layout.layout_hash()}")
        for p in layout.tiles:
            every = "never stale" if p.expected_interval_s is None else f"every {p.expected_interval_s:g}s"
            click.echo(f"  {p.tile:32} col {p.col}+{p.col_span} row {p.row}+{p.row_span}  {every}")
        for pname, grid in layout.presets.items():
            click.echo(f"  preset {pname}: {grid.title!r} {grid.columns}x{grid.rows}, "
                       f"{len(grid.tiles)} tiles, layout {grid.layout_hash()}")
        for r in layout.preset_rules:
            click.echo(f"  rule {r.id}: -> {r.preset} when rule={r.rule or '*'} "
                       f"entity={r.entity_prefix}* severity>={r.severity}")
        if layout.popups.enabled:
            click.echo(f"  pop-ups: severity>={layout.popups.severity}, "
                       f"at most {layout.popups.max_open}")


@wall.command("demo-tiles")
@click.option("--screen", default="main", show_default=True, help="Screen whose tiles to feed.")
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until Ctrl-C).")
@click.option("--data-interval", type=float, default=2.0, show_default=True,
              help="Seconds between new versions of the data tiles.")
@click.option("--camera-fps", type=float, default=1.0, show_default=True,
              help="Camera thumbnails per second per camera.")
@click.option("--once", is_flag=True, help="Produce one version of every tile and exit.")
@click.pass_obj
def demo_tiles_cmd(c, screen: str, duration: float, data_interval: float, camera_fps: float,  # type: ignore[no-untyped-def]
                   once: bool) -> None:
    """Produce demo tiles for SCREEN's layout to <ns>.wall.tiles (kafka-python producer)."""
    from ..kafka import kafka_python_kwargs
    from ..kafka.kafka_python import KafkaProducer
    from ..tiles import encode_tile
    from ..topics import spec
    from .demo import DemoTiles

    s = c.settings
    layout = s.wall.screens.get(screen)
    if layout is None:
        raise click.BadParameter(f"unknown screen {screen!r}; known: {sorted(s.wall.screens)}")
    topic = spec("wall.tiles").name(s.namespace)
    producer = KafkaProducer(**kafka_python_kwargs(s.kafka), linger_ms=5,
                             max_request_size=4 * 1024 * 1024)
    demo = DemoTiles(layout)
    cams = demo.placements("camera")
    start = time.time()
    next_data = next_cam = 0.0
    sent = 0
    try:
        while True:
            now = time.time()
            if now >= next_data:
                for t in demo.data_tiles(now):
                    producer.send(topic, key=t.id.encode(), value=encode_tile(t))
                    sent += 1
                next_data = now + data_interval
            if now >= next_cam and camera_fps > 0:
                for p in cams:
                    t = demo.camera(p, now)
                    producer.send(topic, key=t.id.encode(), value=encode_tile(t))
                    sent += 1
                next_cam = now + 1 / camera_fps
            producer.flush()
            if once or (duration and now - start >= duration):
                break
            time.sleep(max(0.01, min(next_data, next_cam if camera_fps > 0 else next_data) - time.time()))
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        producer.close()
    click.echo(f"demo-tiles: produced {sent} tile version(s) to {topic}", err=True)
