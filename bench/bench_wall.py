"""Wall fan-out: delivered updates/s, bytes/s and produced->received latency, next to a
bare ``websockets`` broadcast of the same messages measured in the same run; then the
cost of one stalled client to the others.

Each client shows a 16-tile screen: 4 camera tiles at 2 fps (a JPEG-sized image each, as a
binary frame) and 12 data tiles at 1 Hz. Processes per run, all on loopback:

- the server: ``WallServer`` (latest-wins queues, tokens, heartbeats; tiles fed straight
  into its store by a generator in its event loop, Kafka left out so only the fan-out is
  measured) or the baseline: a bare websockets server calling ``broadcast()``;
- ``--procs`` client processes (default 4) sharing the N connections (a minimal asyncio
  websocket client, a few µs per frame, the same for both servers);
- this driver, which starts them, holds the stalled client of the stall runs (a raw TCP
  socket that completes the handshake, says hello and never reads), collects the figures
  and prints the table.

Latency: ``time.time()`` at production (in the tile's ``produced_at``) to arrival at the
client (the image frame's arrival for camera tiles); one host, one clock. Each process
also records how late its own event loop runs (``lag ms``: p99 lateness of a 5 ms sleep,
in the measured window): a client lag near the latency p99 means the measuring side,
not the server, set the figure.

Stall runs: the wall server at ``--stall-clients`` clients, without and with one stalled
client, alternated ABAB for ``--stall-rounds`` pairs; a stalled run starts measuring only
once ``/healthz`` shows the stalled client dropping updates (its buffers are full).

Usage: ``python bench/bench_wall.py [--quick] [--sizes 100,500,1000] [--seconds 8]``
       ``python bench/bench_wall.py --stall-only --stall-rounds 5``
       ``python bench/bench_wall.py --windows 12``
``BENCH_WALL_PROFILE=/tmp/p``: each server process writes a cProfile to ``/tmp/p.<pid>``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import json
import logging
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.stalled_ws import StalledClient  # noqa: E402

CAMERAS = [f"camera:bench{i}" for i in range(4)]
DATA = [f"kpi:bench{i}" for i in range(12)]
STALL_TIMEOUT = 60.0
IMAGE_BYTES = 12_000  # a 480x270 JPEG thumbnail at quality 70 is ~10-15 KB
CAMERA_FPS = 2.0
DATA_HZ = 1.0


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _screen() -> dict[str, Any]:
    tiles = [{"tile": t, "col": i % 4 + 1, "row": i // 4 + 1, "expected_interval_s": 5}
             for i, t in enumerate(CAMERAS + DATA)]
    return {"title": "bench", "columns": 4, "rows": 4, "tiles": tiles}


async def _generate(emit) -> None:  # type: ignore[no-untyped-def]
    """Call ``emit(Tile)`` on schedule: cameras at CAMERA_FPS, data tiles at DATA_HZ, staggered."""
    from ioc.tiles import Tile

    image = secrets.token_bytes(IMAGE_BYTES)
    schedule = [(t, 1 / CAMERA_FPS, i / (len(CAMERAS) * CAMERA_FPS)) for i, t in enumerate(CAMERAS)]
    schedule += [(t, 1 / DATA_HZ, i / (len(DATA) * DATA_HZ)) for i, t in enumerate(DATA)]
    start = time.monotonic()
    due = {t: start + off for t, _, off in schedule}
    period = {t: p for t, p, _ in schedule}
    version = 0
    while True:
        now = time.monotonic()
        for tid, when in due.items():
            if when <= now:
                version += 1
                wall = time.time()
                if tid.startswith("camera:"):
                    tile = Tile(tid, "camera", version, wall, {"camera": tid, "health": "online",
                                                              "counts": {"people": 3}}, image,
                                produced_at=wall)
                else:
                    tile = Tile(tid, "kpi", version, wall, {"label": tid, "value": version % 997,
                                                           "unit": "u", "trend": list(range(30))},
                                produced_at=wall)
                emit(tile)
                due[tid] = when + period[tid]
        await asyncio.sleep(max(0.0, min(due.values()) - time.monotonic()))


# -- server roles ------------------------------------------------------------------------


_PROFILE: Any = None  # a cProfile.Profile of the server role when BENCH_WALL_PROFILE is set


async def _until_terminated(work, out: str) -> None:  # type: ignore[no-untyped-def]
    """Run ``work`` with a loop-lag recorder; on SIGTERM write the lag samples to ``out``."""
    lag: list[tuple[float, float]] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(work), asyncio.create_task(_loop_lag(lag))]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        if t in done and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    if out:
        Path(out).write_text(json.dumps({"lag": lag}))
    if _PROFILE is not None:
        _PROFILE.disable()
        _PROFILE.dump_stats(os.environ["BENCH_WALL_PROFILE"] + f".{os.getpid()}")
    os._exit(0)  # skip closing hundreds of connections: the driver is done with them


async def _serve_wall(port: int, key: str, stall_timeout: float) -> None:
    from ioc.config import load_settings
    from ioc.wall.server import WallServer

    s = load_settings(env={}, overrides={"namespace": "bench", "wall": {
        "port": port, "secret": key, "max_clients": 5000, "screens": {"bench": _screen()},
        "auth_timeout_s": 30, "heartbeat_s": 10, "stall_timeout_s": stall_timeout,
        # The raw stalled/extra clients send no pings: do not close them for silence.
        "heartbeat_timeout_s": 900}})
    server = WallServer(s, kafka=False)
    await server.start()
    await _generate(server.store.apply)


async def _serve_bare(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    from ioc.wall.protocol import EncodedTile

    clients: set[Any] = set()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.recv()  # the hello, unchecked
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    def emit(tile) -> None:  # type: ignore[no-untyped-def]
        enc = EncodedTile.of(tile)  # the same bytes the wall server sends
        broadcast(clients, enc.text, text=True)
        if enc.frame is not None:
            broadcast(clients, enc.frame)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**16):
        await _generate(emit)


# -- client role ---------------------------------------------------------------------------


class _LeanClient(asyncio.Protocol):
    """A minimal websocket client (handshake, unmasked server frames, zero-key masked
    replies): a few microseconds per frame, so one process can hold 1,000 clients and
    the figures measure the server rather than the client library."""

    def __init__(self, port: int, hello: bytes, sink: _Sink) -> None:
        self.port, self.hello, self.sink = port, hello, sink
        self.buf = bytearray()
        self.open = False
        self.pending: dict[bytes, float] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(head + b"\0\0\0\0" + payload)  # zero mask key: payload as is

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {bytes(buf[:60])!r}")
            del buf[: i + 4]
            self.open = True
            self._frame(1, self.hello)
        pos, n_buf = 0, len(buf)
        sink = self.sink
        while n_buf - pos >= 2:
            op, ln = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            off = pos + 2
            if ln == 126:
                if n_buf - pos < 4:
                    break
                ln, off = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif ln == 127:
                if n_buf - pos < 10:
                    break
                ln, off = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if n_buf - off < ln:
                break
            now = time.time()
            if sink.measuring:
                sink.bytes += ln
            if op == 2:
                n_id = int.from_bytes(buf[off + 4 : off + 6], "big")
                produced = self.pending.pop(bytes(buf[off + 14 : off + 14 + n_id]), None)
                if produced is not None and sink.measuring:
                    sink.lat.append(now - produced)
                    sink.at.append(now)
            elif op == 1:
                m = orjson.loads(buf[off : off + ln])
                kind = m.get("type")
                if kind == "tile":
                    h = m["tile"]
                    if "image_size" in h:
                        self.pending[h["id"].encode()] = h["produced_at"]
                    elif sink.measuring:
                        sink.lat.append(now - h["produced_at"])
                        sink.at.append(now)
                elif kind == "ping":
                    self._frame(1, orjson.dumps({"type": "pong", "t": m.get("t")}))
            elif op == 9:
                self._frame(10, bytes(buf[off : off + ln]))
            elif op == 8:
                sink.closed.append(int.from_bytes(buf[off : off + 2], "big") if ln >= 2 else 1005)
            pos = off + ln
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Sink:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.at: list[float] = []  # arrival (wall clock) of each latency sample
        self.bytes = 0
        self.measuring = False
        self.closed: list[int] = []


async def _loop_lag(samples: list[tuple[float, float]], every: float = 0.005) -> None:
    """Record (wall time, lateness of a ``every`` s sleep): how late this loop runs callbacks."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(every)
        samples.append((time.time(), time.monotonic() - t - every))


async def _clients(port: int, n: int, token: str, warmup: float, seconds: float, out: str) -> None:
    """Connect ``n`` clients, print ``ready``, wait for ``go`` on stdin, warm up, measure.

    Writes ``out`` (JSON: counts, window, this process's loop lag and CPU) and
    ``out + ".lat"`` (float64 latencies in seconds) for the driver to merge.
    """
    loop = asyncio.get_running_loop()
    sink = _Sink()
    hello = orjson.dumps({"type": "hello", "token": token, "screen": "bench"})
    conns: list[_LeanClient] = []
    t0 = time.monotonic()
    for i in range(n):
        _, proto = await loop.create_connection(lambda: _LeanClient(port, hello, sink), "127.0.0.1", port)
        conns.append(proto)
        if i % 50 == 49:
            await asyncio.sleep(0.02)  # do not flood the accept queue
    connect_s = time.monotonic() - t0
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the driver's "go"
    lag: list[tuple[float, float]] = []
    lag_task = asyncio.create_task(_loop_lag(lag))
    await asyncio.sleep(warmup)
    sink.measuring = True
    cpu0, w0, t1 = time.process_time(), time.time(), time.monotonic()
    if seconds > 0:
        await asyncio.sleep(seconds)
    else:  # until the driver says "stop" (the windowed stall run)
        await loop.run_in_executor(None, sys.stdin.readline)
    sink.measuring = False
    elapsed, cpu = time.monotonic() - t1, time.process_time() - cpu0
    lag_task.cancel()
    failed = sum(1 for c in conns if c.closed.done())
    for c in conns:
        if c.transport is not None:
            c.transport.abort()
    window_lag = sorted(x for t, x in lag if t >= w0)
    res = {
        "clients": n, "failed": failed, "connect_s": round(connect_s, 2), "elapsed": elapsed,
        "window": [w0, w0 + elapsed], "samples": len(sink.lat), "bytes": sink.bytes,
        "close_codes": sorted(set(sink.closed)), "cpu_s": cpu,
        "lag_p99_ms": 1000 * _pct(window_lag, 0.99) if window_lag else None,
    }
    Path(out + ".lat").write_bytes(array.array("d", sink.lat).tobytes())
    Path(out + ".at").write_bytes(array.array("d", sink.at).tobytes())
    Path(out).write_text(json.dumps(res))


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# -- driver --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout}s")


def _healthz(port: int) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read())


def _run(impl: str, n: int, seconds: float, warmup: float, stalled: int = 0,
         procs: int = 1, extra: int = 0, settle: float = 0.0) -> dict[str, Any]:
    """One server process, ``procs`` client processes holding ``n`` clients between them,
    ``stalled`` stalled clients and ``extra`` reading ones (same kind, held by this
    process); the merged figures."""
    from ioc.wall.auth import TokenSigner

    key = secrets.token_hex(16)
    token = TokenSigner(key.encode()).issue(["bench"], 3600)
    port = _free_port()
    me = [sys.executable, __file__]
    tag = f"/tmp/bench_wall_{os.getpid()}_{impl}_{n}_{stalled}"
    server = subprocess.Popen([*me, "--role", f"server-{impl}", "--port", str(port), "--key", key,
                               "--stall-timeout", str(STALL_TIMEOUT), "--out", f"{tag}_srv.json"])
    stuck: list[StalledClient] = []
    clients: list[subprocess.Popen[str]] = []
    outs = [f"{tag}_c{i}.json" for i in range(procs)]
    try:
        _wait_port(port)
        # The stalled clients live in this (otherwise idle) process, not among the others.
        stuck = [StalledClient(port, token) for _ in range(stalled)]
        stuck += [StalledClient(port, token, reading=True) for _ in range(extra)]
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        clients = [subprocess.Popen([*me, "--role", "clients", "--port", str(port), "--n", str(k),
                                     "--token", token, "--warmup", str(warmup), "--seconds",
                                     str(seconds), "--out", out],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for k, out in zip(shares, outs, strict=True)]
        for c in clients:
            assert c.stdout is not None
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process failed to connect")
        stall_wait = 0.0
        t_settle = time.monotonic()
        if stalled and impl == "wall":
            # Measure only once every stalled client's buffers are full: its updates then
            # wait in its latest-wins queue, replaced by newer ones (its drops).
            t_w = time.monotonic()
            while _healthz(port)["clients_with_drops"] < stalled:
                if time.monotonic() - t_w > 30:
                    raise RuntimeError("the stalled client never filled its buffers")
                time.sleep(0.2)
            stall_wait = time.monotonic() - t_w
        # Both kinds of stall run start the same time after connecting (the stalled
        # client's buffers are normally full by then).
        time.sleep(max(0.0, settle - (time.monotonic() - t_settle)))
        # Server CPU from "go" (after connecting and, in stall runs, after the stalled
        # client's buffers filled) to the end of the measured window.
        t_cpu = _cpu_seconds(server.pid)
        for c in clients:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        for c in clients:
            c.wait(timeout=warmup + seconds + 120)
            if c.returncode != 0:
                raise RuntimeError(f"client process exited with {c.returncode}")
        parts = [json.loads(Path(o).read_text()) for o in outs]
        lat = array.array("d")
        for o in outs:
            lat.frombytes(Path(o + ".lat").read_bytes())
        lat_s = sorted(lat)
        elapsed = statistics.mean(p["elapsed"] for p in parts)
        res: dict[str, Any] = {
            "clients": n, "procs": procs, "failed": sum(p["failed"] for p in parts),
            "updates_per_s": len(lat_s) / elapsed, "bytes_per_s": sum(p["bytes"] for p in parts) / elapsed,
            "p50_ms": 1000 * _pct(lat_s, 0.50) if lat_s else None,
            "p99_ms": 1000 * _pct(lat_s, 0.99) if lat_s else None,
            "max_ms": 1000 * lat_s[-1] if lat_s else None,
            "samples": len(lat_s), "close_codes": sorted({c for p in parts for c in p["close_codes"]}),
            # How late the measuring side ran its own callbacks: if this is near the p99,
            # the clients, not the server, set the figure.
            "client_lag_p99_ms": max((p["lag_p99_ms"] or 0.0) for p in parts),
            "client_cpu_pct": 100 * sum(p["cpu_s"] for p in parts) / elapsed,
            "stall_wait_s": round(stall_wait, 1),
        }
        window = (min(p["window"][0] for p in parts), max(p["window"][1] for p in parts))
        res["server_cpu_s"] = round(_cpu_seconds(server.pid) - t_cpu, 2)
        # Server CPU per delivered update over warm-up + measurement, robust to the
        # shared host's load where latency is not.
        total = res["updates_per_s"] * (warmup + seconds)
        res["us_per_update"] = 1e6 * res["server_cpu_s"] / total if total else 0.0
        if impl == "wall":
            h = _healthz(port)
            res["drops"] = h["drops"]
            res["clients_with_drops"] = h["clients_with_drops"]
            res["stalled_closed"] = h["counters"].get("stalled", 0)
        res["impl"] = impl
        res["stalled"] = stalled
        server.terminate()  # our own child, by PID; it writes its loop lag on SIGTERM
        server.wait(10)
        srv = json.loads(Path(f"{tag}_srv.json").read_text())
        srv_lag = sorted(x for t, x in srv["lag"] if window[0] <= t <= window[1])
        res["server_lag_p99_ms"] = 1000 * _pct(srv_lag, 0.99) if srv_lag else None
        return res
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()  # our own child, by PID
                c.wait(5)
        if server.poll() is None:
            server.terminate()  # our own child, by PID
            server.wait(10)
        for st in stuck:
            st.close()
        for o in outs:
            Path(o).unlink(missing_ok=True)
            Path(o + ".lat").unlink(missing_ok=True)
        Path(f"{tag}_srv.json").unlink(missing_ok=True)


def _stall_windows(n: int, procs: int, cycles: int, window: float, settle: float,
                   refill: float) -> dict[str, Any]:
    """One wall server, ``n`` clients in ``procs`` processes, and one extra raw client
    held here that alternately reads (window R) and stops reading (window S).

    Sequence: settle, then ``cycles`` times [R window, stop reading, wait until the
    server drops updates for it (its buffers are full), wait ``refill`` s, S window,
    read again, wait ``refill`` s]; then a last R window. Each window gives the others' latency p99 over
    the samples that arrived in it, so R and S windows seconds apart see the same host.
    """
    from ioc.wall.auth import TokenSigner

    key = secrets.token_hex(16)
    token = TokenSigner(key.encode()).issue(["bench"], 3600)
    port = _free_port()
    me = [sys.executable, __file__]
    tag = f"/tmp/bench_wall_{os.getpid()}_windows"
    server = subprocess.Popen([*me, "--role", "server-wall", "--port", str(port), "--key", key,
                               "--stall-timeout", str(STALL_TIMEOUT), "--out", f"{tag}_srv.json"])
    outs = [f"{tag}_c{i}.json" for i in range(procs)]
    clients: list[subprocess.Popen[str]] = []
    extra: StalledClient | None = None
    try:
        _wait_port(port)
        extra = StalledClient(port, token, reading=True)
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        clients = [subprocess.Popen([*me, "--role", "clients", "--port", str(port), "--n", str(k),
                                     "--token", token, "--warmup", "0", "--seconds", "0",
                                     "--out", out],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for k, out in zip(shares, outs, strict=True)]
        for c in clients:
            assert c.stdout is not None
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process failed to connect")

        def tell(line: str) -> None:
            for c in clients:
                assert c.stdin is not None
                c.stdin.write(line + "\n")
                c.stdin.flush()

        tell("go")
        time.sleep(settle)
        windows: list[tuple[str, float, float]] = []
        fill: list[float] = []
        cpu: dict[str, float] = {"R": 0.0, "S": 0.0}

        sys_cpu: dict[str, float] = {"R": 0.0, "S": 0.0}

        def measure(kind: str) -> None:
            c0, s0, t0 = _cpu_seconds(server.pid), _cpu_seconds(server.pid, "sys"), time.time()
            time.sleep(window)
            windows.append((kind, t0, time.time()))
            cpu[kind] += _cpu_seconds(server.pid) - c0
            sys_cpu[kind] += _cpu_seconds(server.pid, "sys") - s0

        for _ in range(cycles):
            measure("R")
            drops0 = _healthz(port)["drops"]
            extra.reading.clear()
            t_w = time.monotonic()
            while _healthz(port)["drops"] <= drops0:
                if time.monotonic() - t_w > 60:
                    raise RuntimeError("the stalled client never filled its buffers")
                time.sleep(0.2)
            fill.append(round(time.monotonic() - t_w, 1))
            time.sleep(refill)  # as long after the switch as the R windows are
            measure("S")
            extra.reading.set()
            time.sleep(refill)
        measure("R")
        h = _healthz(port)
        tell("stop")
        for c in clients:
            c.wait(timeout=60)
            if c.returncode != 0:
                raise RuntimeError(f"client process exited with {c.returncode}")
        lat, at = array.array("d"), array.array("d")
        for o in outs:
            lat.frombytes(Path(o + ".lat").read_bytes())
            at.frombytes(Path(o + ".at").read_bytes())
        parts = [json.loads(Path(o).read_text()) for o in outs]
        server.terminate()  # our own child, by PID; it writes its loop lag on SIGTERM
        server.wait(10)
        srv_lag = json.loads(Path(f"{tag}_srv.json").read_text())["lag"]
        rows = []
        for kind, w0, w1 in windows:
            sel = sorted(x for x, t in zip(lat, at, strict=True) if w0 <= t < w1)
            lag = sorted(x for t, x in srv_lag if w0 <= t < w1)
            rows.append({"kind": kind, "start": w0, "samples": len(sel),
                         "updates_per_s": len(sel) / (w1 - w0),
                         "p50_ms": 1000 * _pct(sel, 0.5), "p99_ms": 1000 * _pct(sel, 0.99),
                         "max_ms": 1000 * sel[-1], "server_lag_p99_ms": 1000 * _pct(lag, 0.99)})
        return {"rows": rows, "fill_s": fill, "server_cpu_s": cpu, "server_sys_s": sys_cpu,
                "health": h,
                "client_lag_p99_ms": max((p["lag_p99_ms"] or 0.0) for p in parts),
                "failed": sum(p["failed"] for p in parts)}
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()  # our own child, by PID
                c.wait(5)
        if server.poll() is None:
            server.terminate()  # our own child, by PID
            server.wait(10)
        if extra is not None:
            extra.close()
        for o in outs:
            for suffix in ("", ".lat", ".at"):
                Path(o + suffix).unlink(missing_ok=True)
        Path(f"{tag}_srv.json").unlink(missing_ok=True)


def _print_windows(res: dict[str, Any], window: float) -> None:
    rows = res["rows"]
    print("window  kind  updates/s   p50 ms  p99 ms  max ms  srv lag p99 ms")
    for i, r in enumerate(rows):
        print(f"{i:6}  {r['kind']:4} {r['updates_per_s']:10.0f} {r['p50_ms']:8.1f} {r['p99_ms']:7.1f} "
              f"{r['max_ms']:7.1f} {r['server_lag_p99_ms']:10.1f}")
    rs = [r["p99_ms"] for r in rows if r["kind"] == "R"]
    ss = [r["p99_ms"] for r in rows if r["kind"] == "S"]
    # Each S window against the mean of the R windows either side of it.
    brk = [rows[i]["p99_ms"] / ((rows[i - 1]["p99_ms"] + rows[i + 1]["p99_ms"]) / 2)
           for i in range(1, len(rows) - 1) if rows[i]["kind"] == "S"]
    mr, ms_ = statistics.median(rs), statistics.median(ss)
    cpu = res["server_cpu_s"]
    h = res["health"]
    print(f"one stalled client, {len(ss)} stalled windows between {len(rs)} reading ones "
          f"({window:g} s each): others' median p99 {mr:.1f} -> {ms_:.1f} ms "
          f"({100 * (ms_ / mr - 1):+.0f}%; target <= +10%); bracketed ratios "
          f"x{[round(x, 2) for x in brk]}, median x{statistics.median(brk):.2f}")
    n_r = sum(r["samples"] for r in rows if r["kind"] == "R")
    n_s = sum(r["samples"] for r in rows if r["kind"] == "S")
    print(f"server CPU per window: reading {cpu['R'] / len(rs):.2f} s, stalled {cpu['S'] / len(ss):.2f} s "
          f"({1e6 * cpu['R'] / n_r:.1f} vs {1e6 * cpu['S'] / n_s:.1f} µs per update received, of "
          f"which system {1e6 * res['server_sys_s']['R'] / n_r:.1f} vs "
          f"{1e6 * res['server_sys_s']['S'] / n_s:.1f}); "
          f"buffers full after {res['fill_s']} s; drops {h['drops']} "
          f"(clients with drops: {h['clients_with_drops']}); client loop lag p99 "
          f"{res['client_lag_p99_ms']:.1f} ms; failed {res['failed']}")


def _cpu_seconds(pid: int, which: str = "all") -> float:
    """CPU seconds of ``pid``: user + system (``all``), or only system time (``sys``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if which == "sys" else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


HEADER = ("impl  clients stl  updates/s    MB/s   p50 ms  p99 ms  max ms  srv-cpu us/upd fail"
          "  lag ms: srv  cli")


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise median of runs (same impl and size)."""
    out = dict(rs[0])
    for k in ("updates_per_s", "bytes_per_s", "p50_ms", "p99_ms", "max_ms", "server_cpu_s",
              "us_per_update", "drops", "clients_with_drops", "failed", "server_lag_p99_ms",
              "client_lag_p99_ms"):
        vals = [r[k] for r in rs if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals)
    out["impl"] = f"{rs[0]['impl']}~"
    return out


def _fmt(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:7.1f}"

    extra = (f" drops={r['drops']:.0f} (clients with drops: {r['clients_with_drops']:.0f})"
             if r["impl"].startswith("wall") else "")
    return (f"{r['impl']:5} {r['clients']:5} {r['stalled']:3} {r['updates_per_s']:10.0f} "
            f"{r['bytes_per_s'] / 1e6:9.1f} {ms(r['p50_ms'])} {ms(r['p99_ms'])} {ms(r['max_ms'])} "
            f"{r['server_cpu_s']:7.1f} {r['us_per_update']:6.0f} {r['failed']:4.0f} "
            f"{ms(r.get('server_lag_p99_ms'))} {ms(r.get('client_lag_p99_ms'))}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 and 500 clients, 4 s each")
    ap.add_argument("--sizes", default=None, help="comma-separated client counts (default 100,500,1000)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 8)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--rounds", type=int, default=None, help="alternated bare/wall runs per size (default 2, quick 1)")
    ap.add_argument("--stall-clients", type=int, default=500, help="clients in the stalled-client run")
    ap.add_argument("--stall-rounds", type=int, default=None,
                    help="stalled runs (default 3, quick 1), each between two runs without")
    ap.add_argument("--stall-seconds", type=float, default=None,
                    help="measured seconds in stall runs (default 10; the stalled client's buffers "
                         "fill after ~5 s, and it is disconnected at wall.stall_timeout_s=15)")
    ap.add_argument("--stall-timeout", type=float, default=60.0,
                    help="wall.stall_timeout_s of the server (default 60: the stalled client is "
                         "measured while stalled; with 15, its 4029 close can fall in the window)")
    ap.add_argument("--procs", type=int, default=4,
                    help="client processes sharing the clients (default 4: one process holding "
                         "500 clients is itself late by tens of ms on 2 busy cores)")
    ap.add_argument("--stall-only", action="store_true", help="skip the size table")
    ap.add_argument("--settle", type=float, default=8.0,
                    help="stall runs: seconds between connecting and measuring (default 8), the "
                         "same with and without the stalled client")
    ap.add_argument("--windows", type=int, default=0, metavar="CYCLES",
                    help="instead of separate stall runs: one server run whose extra client "
                         "alternately reads and stalls, CYCLES stalled windows between "
                         "reading ones (drift-robust; see docs/performance/wall.md)")
    ap.add_argument("--window", type=float, default=6.0, help="seconds per window (default 6)")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    _raise_fd_limit()
    global STALL_TIMEOUT, _PROFILE
    STALL_TIMEOUT = a.stall_timeout
    if a.role and a.role.startswith("server"):
        # Writes to clients that the bench aborted at the end are expected; not news.
        logging.getLogger("asyncio").setLevel(logging.ERROR)
    if a.role and a.role.startswith("server") and os.environ.get("BENCH_WALL_PROFILE"):
        import cProfile

        _PROFILE = cProfile.Profile()
        _PROFILE.enable()
    if a.role == "server-wall":
        asyncio.run(_until_terminated(_serve_wall(a.port, a.key, a.stall_timeout), a.out))
        return
    if a.role == "server-bare":
        asyncio.run(_until_terminated(_serve_bare(a.port), a.out))
        return
    if a.role == "clients":
        asyncio.run(_clients(a.port, a.n, a.token, a.warmup, a.seconds, a.out))
        return
    if a.windows:
        print(f"wall stalled-client windows: {a.stall_clients} clients in {a.procs} process(es), "
              f"16-tile screen, {a.windows} cycles of {a.window:g} s windows; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        res = _stall_windows(a.stall_clients, a.procs, a.windows, a.window, a.settle, 3.0)
        _print_windows(res, a.window)
        print(f"load now {os.getloadavg()[0]:.2f}")
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))
        return
    sizes = [int(x) for x in (a.sizes or ("100,500" if a.quick else "100,500,1000")).split(",")]
    seconds = a.seconds or (4.0 if a.quick else 8.0)
    rounds = a.rounds or (1 if a.quick else 2)
    a.stall_rounds = a.stall_rounds or (1 if a.quick else 3)
    a.stall_seconds = a.stall_seconds or (8.0 if a.quick else 10.0)
    print(f"wall fan-out: 16-tile screen (4 cameras x {CAMERA_FPS:g} fps x {IMAGE_BYTES // 1000} KB, "
          f"12 data tiles x {DATA_HZ:g} Hz), {seconds:g} s measured after {a.warmup:g} s warm-up, "
          f"{0 if a.stall_only else rounds} alternated round(s); stall runs: "
          f"{a.stall_clients} clients, {a.stall_seconds:g} s, settle {a.settle:g} s; clients in "
          f"{a.procs} process(es); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(HEADER)
    results = []
    for n in [] if a.stall_only else sizes:
        for _ in range(rounds):
            for impl in ("bare", "wall"):
                r = _run(impl, n, seconds, a.warmup, procs=a.procs)
                results.append(r)
                print(_fmt(r), flush=True)
    # Stalled-client effect: the same size with and without one stalled client, alternated
    # A B A B ... A (the host is shared and drifts): each stalled run is bracketed by two
    # runs without, so a steady drift cancels in its ratio to their mean.
    refs: list[dict[str, Any]] = []
    stls: list[dict[str, Any]] = []
    for i in range(2 * a.stall_rounds + 1):
        stalled = i % 2
        r = _run("wall", a.stall_clients, a.stall_seconds, a.warmup, stalled=stalled,
                 extra=1 - stalled, procs=a.procs, settle=a.settle)
        (stls if stalled else refs).append(r)
        print(_fmt(r), flush=True)
    results += refs + stls
    print(f"\nmedians (load now {os.getloadavg()[0]:.2f}):")
    print(HEADER)
    five = None
    for n in [] if a.stall_only else sizes:
        for impl in ("bare", "wall"):
            m = _median([r for r in results if r["clients"] == n and r["impl"] == impl
                         and not r["stalled"] and r not in refs])
            print(_fmt(m))
            if impl == "wall" and n == 500:
                five = m["p99_ms"]
    ref, stl = _median(refs), _median(stls)
    print(_fmt(ref))
    print(_fmt(stl))
    print(f"stalled client ({a.stall_rounds} stalled runs between {len(refs)} without, "
          f"{a.stall_seconds:g} s each): others' "
          f"median p99 {ref['p99_ms']:.1f} -> {stl['p99_ms']:.1f} ms "
          f"({100 * (stl['p99_ms'] / ref['p99_ms'] - 1):+.0f}%; target <= +10%); drops counted "
          f"(all for the stalled client: {all(r['clients_with_drops'] <= 1 for r in stls)}): "
          f"{[r['drops'] for r in stls]}")
    ratios = [s_["p99_ms"] / ((refs[i]["p99_ms"] + refs[i + 1]["p99_ms"]) / 2)
              for i, s_ in enumerate(stls)]
    print(f"bracketed (stalled / mean of the runs before and after): p99 "
          f"x{[round(x, 2) for x in ratios]}, median "
          f"x{statistics.median(ratios):.2f}; stalled client closed with 4029 during the runs: "
          f"{[r['stalled_closed'] for r in stls]}; waited for its buffers to fill: "
          f"{[r['stall_wait_s'] for r in stls]} s")
    if five is not None:
        print(f"target p99 <= 250 ms at 500 clients: {five:.1f} ms -> "
              f"{'met' if five <= 250 else 'NOT met'} (median of the size-table runs)")
    all500 = [r["p99_ms"] for r in results
              if r["impl"] == "wall" and r["clients"] == 500 and not r["stalled"]]
    if len(all500) > 1:
        print(f"all wall runs at 500 clients without a stalled client: p99 "
              f"{[round(v) for v in all500]} ms, median {statistics.median(all500):.1f}, "
              f"{sum(v <= 250 for v in all500)} of {len(all500)} within 250 ms")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
