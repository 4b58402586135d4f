"""Malformed requests against a running gateway: the status histogram (target: no 5xx),
next to the same run's baseline of valid requests (requests/s, and the ratio).

    .venv/bin/python bench/bench_gateway_hostile.py [--n 10000] [--quick] [--clients 8]

Starts `ioc gateway` (a process of its own, on a free 127.0.0.1 port) against the local
stack in a namespace of its own, dropped at the end. Then, from ``--clients`` threads on
kept-alive connections:

1. baseline: ``--n`` valid requests (one envelope each; each waits for the broker's ack);
2. hostile: ``--n`` malformed requests of many kinds (random bytes, invalid UTF-8,
   nesting 10,000 deep, NaN/Infinity, big integers, truncated JSON, broken envelopes,
   NGSI-LD with ``type`` as a list/object/number and times out of range, non-JSON
   Content-Types, bodies and batches over the limits), drawn with a fixed seed.

3. slow clients (``--slowloris N``, default 1200): N connections sending their headers
   at 1 byte/s, against the default ``header_timeout_s`` (10 s) and
   ``max_connections`` (1000), while one client keeps sending valid requests on fresh
   connections: how many were cut by the header timeout (after how long), how many
   refused at once, and how the valid client fared meanwhile.

Prints the status histogram of each phase and per kind, the gateway's own counters
(``internal_errors`` and ``item_errors`` must stay 0) and exits 1 if any 5xx was seen.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ioc.config import load_settings  # noqa: E402
from ioc.gateway import hash_key, new_key  # noqa: E402
from ioc.kafka import delete_namespace_topics, ensure_topics  # noqa: E402

KEY = new_key()
MAX_BODY = 256 * 1024
Request = tuple[str, bytes, str | None]  # path, body, Content-Type
EVENTS = "/v1/events"
NGSI = "/ngsi-ld/v1/entityOperations/upsert?source=air"


def _valid(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"v{i}", "source": "loops", "type": "traffic.flow", "entity": f"loop-{i % 50}",
            "time": time.time() - 10, "values": {"intensity": float(i % 300)}, **kw}


def _ngsi(**kw: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:TrafficFlowObserved:loop-7", "type": "TrafficFlowObserved",
            "dateObserved": "2025-05-01T10:05:00Z",
            "intensity": {"type": "Property", "value": 197}, **kw}


def _dumps(x: Any) -> bytes:
    return json.dumps(x, allow_nan=True).encode()


_ODD: list[Any] = [None, True, 0, -1, 10**400, 1e308, float("nan"), float("inf"), "", "x" * 5000,
        [], {}, [[[[1]]]], {"a": {"b": {"c": []}}}, "\u202e\U0010ffff", "2025-13-45T99:99Z"]
_ODD_NGSI = [*_ODD, {"type": "GeoProperty", "value": {"type": "Point",
                                                      "coordinates": [10**400, 1]}},
             {"type": "Property", "value": 1, "observedAt": [[]]}]


def _kinds() -> dict[str, Callable[[random.Random], Request]]:
    deep = 10_000
    return {
        "random_bytes": lambda r: (EVENTS, r.randbytes(r.randint(0, 2000)), "application/json"),
        "invalid_utf8": lambda r: (EVENTS, b'[{"id":"x' + r.choice(
            [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + b'"}]', "application/json"),
        "deep_list": lambda r: (r.choice([EVENTS, NGSI]), b"[" * deep + b"]" * deep, None),
        "deep_object": lambda r: (EVENTS, b'{"a":' * deep + b"1" + b"}" * deep, None),
        "nan_infinity": lambda r: (EVENTS, r.choice([b'[{"id":"x","time":NaN}]', b"Infinity",
                                                     b'{"events":[-Infinity]}']), None),
        "big_ints": lambda r: (r.choice([EVENTS, NGSI]), b'[{"id":"x","time":1' + b"0" * 400
                               + b',"dateObserved":-9' + b"9" * 400 + b"}]", None),
        "truncated": lambda r: (EVENTS, (b := _dumps([_valid(r.randint(0, 9))]))[
            : r.randint(0, len(b) - 1)], None),
        "envelope_field": lambda r: (EVENTS, _dumps([_valid(r.randint(0, 9), **{r.choice(
            ["id", "source", "type", "entity", "time", "values", "attributes", ""]): r.choice(
                _ODD)})]), "application/json"),
        "envelope_shape": lambda r: (EVENTS, _dumps(r.choice(
            [{"events": r.choice(_ODD)}, r.choice(_ODD), [r.choice(_ODD)] * 3, {"events": []},
             [[_valid(1)]]])), None),
        "ngsi_type": lambda r: (NGSI, _dumps([_ngsi(type=r.choice(
            [["TrafficFlowObserved"], {"a": 1}, 7, None, "WeatherObserved"]))]), None),
        "ngsi_time": lambda r: (NGSI, _dumps([_ngsi(dateObserved=r.choice(
            [1e300, -1e20, "0001-01-01T00:00:00+05:00", "+10000-01-01T00:00:00Z",
             {"type": "Property", "value": {"@type": "DateTime", "@value": [1]}}]))]),
            "application/ld+json"),
        "ngsi_nested": lambda r: (NGSI, _dumps([_ngsi(**{r.choice(
            ["intensity", "location", "@context", "id"]): r.choice(_ODD_NGSI)})]), None),
        "content_type": lambda r: (EVENTS, _dumps([_valid(1)]), r.choice(
            ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
             "application/json; charset=latin-1", "application/octet-stream"])),
        "too_large": lambda r: (EVENTS, b"[" + b" " * (MAX_BODY + 10) + b"]", None),
        "too_many": lambda r: (EVENTS, _dumps([_valid(i) for i in range(1001)]), None),
    }


class _Client:
    """One kept-alive connection; reconnects when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes, ctype: str | None) -> int:
        headers = {"Authorization": f"Bearer {KEY}"}
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                r = self.conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return r.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt == 2:
                    return -1  # no answer at all (counted apart from any status)
        return -1


def _run(port: int, requests: Sequence[tuple[str, Request]], clients: int
         ) -> tuple[float, Counter[int], dict[str, Counter[int]]]:
    statuses: Counter[int] = Counter()
    by_kind: dict[str, Counter[int]] = defaultdict(Counter)
    lock = threading.Lock()
    it = iter(requests)

    def work() -> None:
        c = _Client(port)
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                break
            kind, (path, body, ctype) = nxt
            st = c.post(path, body, ctype)
            with lock:
                statuses[st] += 1
                by_kind[kind][st] += 1
        c.conn.close()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, statuses, by_kind


def _slowloris(port: int, n: int, limit_s: float) -> dict[str, Any]:
    """Open ``n`` connections that send headers at 1 byte/s; classify how each ended."""
    head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: 1\r\n" * 200
    socks: dict[socket.socket, float] = {}
    connect_failed = 0
    for _ in range(n):
        c = socket.socket()
        c.settimeout(5)
        try:
            c.connect(("127.0.0.1", port))
        except OSError:
            connect_failed += 1
            c.close()
            continue
        c.setblocking(False)
        socks[c] = time.monotonic()
    sel = selectors.DefaultSelector()  # epoll: select() stops at descriptor 1024
    for c in socks:
        sel.register(c, selectors.EVENT_READ)
    cut: list[float] = []
    refused = 0
    pos = 0
    t0 = time.monotonic()

    def ended(c: socket.socket, answered: bool) -> None:
        nonlocal refused
        age = time.monotonic() - socks.pop(c)
        sel.unregister(c)
        c.close()
        if answered:
            cut.append(age)
        else:
            refused += 1

    while socks and time.monotonic() - t0 < limit_s:
        for c in list(socks):
            try:
                c.send(head[pos % len(head):pos % len(head) + 1])
            except OSError:
                ended(c, False)  # reset: refused when it connected
        pos += 1
        tick = time.monotonic() + 1.0
        while socks and (left := tick - time.monotonic()) > 0:
            for key, _ in sel.select(min(left, 0.2)):
                c = key.fileobj  # type: ignore[assignment]
                try:
                    data = c.recv(4096)
                except OSError:
                    data = b""
                ended(c, data.startswith(b"HTTP/1.1 408"))
    still = len(socks)
    for c in socks:
        c.close()
    sel.close()
    return {"cut": cut, "refused": refused + connect_failed, "still_open": still}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int) -> dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/healthz")
    m: dict[str, Any] = json.loads(c.getresponse().read())["metrics"]
    c.close()
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="requests per phase")
    ap.add_argument("--quick", action="store_true", help="--n 1000")
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--slowloris", type=int, default=1200,
                    help="slow connections in phase 3 (0: skip it)")
    ap.add_argument("--source", type=Path, default=ROOT,
                    help="the source tree whose `ioc gateway` runs (e.g. an older commit "
                         "unpacked with `git archive`, for a before/after)")
    args = ap.parse_args()
    n = 1000 if args.quick else args.n
    s = load_settings().with_namespace(f"bgh{secrets.token_hex(4)}")
    if not ensure_topics(s).success:
        print("could not create the bench topics", file=sys.stderr)
        return 2
    port = _free_port()
    env = dict(os.environ, IOC_METRICS__ENABLED="false", IOC_NAMESPACE=s.namespace,
               IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers),
               IOC_GATEWAY__PUBLISHERS=json.dumps(
                   {"bench": {"key_sha256": hash_key(KEY), "sources": ["loops", "air"]}}),
               IOC_GATEWAY__MAX_BODY_BYTES=str(MAX_BODY))
    proc = subprocess.Popen([sys.executable, "-m", "ioc", "gateway", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, cwd=args.source)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    print("the gateway did not start", file=sys.stderr)
                    return 2
                time.sleep(0.2)
        rng = random.Random(args.seed)
        kinds = _kinds()
        names = sorted(kinds)
        _run(port, [("warmup", (EVENTS, json.dumps([_valid(i)]).encode(), None))
                    for i in range(50)], args.clients)
        valid: list[tuple[str, Request]] = [("valid", (EVENTS, json.dumps([_valid(i)]).encode(), "application/json"))
                 for i in range(n)]
        hostile = [(k, kinds[k](rng)) for k in (names[i % len(names)] for i in range(n))]
        t_valid, st_valid, _ = _run(port, valid, args.clients)
        t_host, st_host, by_kind = _run(port, hostile, args.clients)
        m = _healthz(port)
        slow: dict[str, Any] = {}
        during: Counter[int] = Counter()
        if args.slowloris:
            stop = threading.Event()

            def valid_client() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    c = _Client(port)
                    during[c.post(EVENTS, json.dumps([_valid(n + i)]).encode(), None)] += 1
                    c.conn.close()
                    time.sleep(0.05)

            vt = threading.Thread(target=valid_client)
            vt.start()
            slow = _slowloris(port, args.slowloris, limit_s=60)
            stop.set()
            vt.join()
            m_slow = _healthz(port)
    finally:
        proc.terminate()
        proc.wait(20)
        delete_namespace_topics(s)
    fives = sum(v for k, v in st_host.items() if k >= 500)
    print(f"\ngateway under malformed requests: {n} valid then {n} malformed, "
          f"{args.clients} clients, seed {args.seed}, source {args.source}")
    print(f"  valid     {n / t_valid:8.0f} req/s  statuses {dict(sorted(st_valid.items()))}")
    print(f"  malformed {n / t_host:8.0f} req/s  statuses {dict(sorted(st_host.items()))}")
    print(f"  ratio malformed/valid req/s: {t_valid / t_host:.2f}")
    print("  by kind:")
    for k in names:
        print(f"    {k:16s} {dict(sorted(by_kind[k].items()))}")
    print(f"  gateway counters: {m}")
    if slow:
        cut = slow["cut"]
        q = (f"after min {min(cut):.1f} / median {statistics.median(cut):.1f} / max "
             f"{max(cut):.1f} s" if cut else "")
        print(f"  slow clients: {args.slowloris} connections sending headers at 1 byte/s: "
              f"{len(cut)} cut by the header timeout (408) {q}; {slow['refused']} refused at "
              f"once; {slow['still_open']} still open after 60 s")
        d_cut = m_slow.get("header_timeouts", 0) - m.get("header_timeouts", 0)
        d_ref = m_slow.get("connections_refused", 0) - m.get("connections_refused", 0)
        print(f"    gateway: header_timeouts +{d_cut}, connections_refused +{d_ref}; a valid "
              f"client on fresh connections meanwhile: {dict(sorted(during.items()))} "
              f"(-1: refused)")
    print(f"  5xx: {fives}; no answer: {st_host.get(-1, 0)}; bugs counted by the gateway: "
          f"internal_errors={m.get('internal_errors')} item_errors={m.get('item_errors')}")
    return 1 if fives or m.get("internal_errors") or m.get("item_errors") or -1 in st_host else 0


if __name__ == "__main__":
    sys.exit(main())
