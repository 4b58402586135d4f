"""Runs: pipeline runs over replay namespaces, registered in the live schema's ``runs``
table, and their comparison.

A run = one namespace + the settings the pipeline ran with there. The namespace is the
isolation: the run's topics, rows and tiles live only under it, so nothing mixes with
live data; the run id is written into the namespace's ``namespace_info`` (key ``run``),
so every result in that schema is attributable to the run.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import Settings
from ..errors import IOCError, StorageError

__all__ = ["RunRecord", "finish_run", "list_runs", "resolve_run", "settings_diff", "start_run"]

_HIDDEN = ("dsn", "password", "secret", "token")


def _masked(data: Any, path: str = "") -> Any:
    if isinstance(data, Mapping):
        return {k: ("***" if any(h in k.lower() for h in _HIDDEN) else _masked(v, f"{path}.{k}"))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_masked(v, path) for v in data]
    return data


def settings_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """Dotted key -> ``[value in a, value in b]`` for every leaf that differs (pure)."""
    out: dict[str, list[Any]] = {}
    for k in sorted(set(a) | set(b)):
        p = f"{prefix}.{k}" if prefix else str(k)
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.update(settings_diff(va, vb, p))
        elif va != vb:
            out[p] = [va, vb]
    return out


def _settings_json(s: Settings) -> dict[str, Any]:
    return _masked(s.model_dump(mode="json"))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RunRecord:
    """One row of the registry."""

    id: str
    namespace: str
    label: str
    status: str
    started_at: Any
    finished_at: Any
    settings_diff: dict[str, Any]
    source: dict[str, Any]


_COLS = "id, namespace, label, status, started_at, finished_at, settings_diff, source"


def _registry(registry: Settings) -> sql.Composed:
    return sql.Identifier(registry.db_schema, "runs")  # type: ignore[return-value]


def start_run(registry: Settings, run: Settings, *, label: str = "",
              source: Mapping[str, Any] | None = None) -> RunRecord:
    """Register a run of ``run`` (its namespace and settings) in ``registry``'s schema.

    Creates the run namespace's topics and schema, then tags its ``namespace_info``.

    Raises:
        IOCError: the run namespace is the registry's (live) namespace, or already holds a run.
    """
    from ..kafka import ensure_topics
    from ..storage import connect, migrate

    if run.namespace == registry.namespace:
        raise IOCError(f"a run needs its own namespace; {run.namespace!r} is the live one "
                       f"(registry {registry.namespace!r})")
    migrate(registry)
    rep = ensure_topics(run)
    if not rep.success:
        raise IOCError("run namespace topics differ from the catalogue:\n" + "\n".join(rep.lines()))
    migrate(run)
    run_id = f"run-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    diff = settings_diff(_settings_json(registry.with_namespace(run.namespace)), _settings_json(run))
    with connect(registry.database, autocommit=True) as conn:
        existing = conn.execute(sql.SQL("select id, status from {} where namespace = %s").format(
            _registry(registry)), (run.namespace,)).fetchone()
        if existing:
            raise IOCError(f"namespace {run.namespace!r} already holds run {existing[0]} "
                           f"({existing[1]}); one run per namespace: replay into a new one")
        conn.execute(sql.SQL(
            "insert into {} (id, namespace, label, settings, settings_diff, source, host) "
            "values (%s, %s, %s, %s, %s, %s, %s)").format(_registry(registry)),
            (run_id, run.namespace, label, Jsonb(_settings_json(run)), Jsonb(diff),
             Jsonb(dict(source or {})), f"{socket.gethostname()}:{os.getpid()}"))
    with connect(run.database, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "insert into {} (key, value) values ('run', %s) on conflict (key) do update "
            "set value = excluded.value, updated_at = now()").format(
                sql.Identifier(run.db_schema, "namespace_info")),
            (Jsonb({"id": run_id, "registry": registry.namespace, "label": label,
                    "settings_diff": diff}),))
    return resolve_run(registry, run_id)


def finish_run(registry: Settings, run_id: str, *, status: str = "finished", note: str = "") -> RunRecord:
    """Mark a run finished or failed.

    Raises:
        IOCError: no such run.
    """
    from ..storage import connect

    if status not in ("finished", "failed"):
        raise IOCError(f"status: expected 'finished' or 'failed', got {status!r}")
    with connect(registry.database, autocommit=True) as conn:
        cur = conn.execute(sql.SQL(
            "update {} set status = %s, finished_at = now(), note = %s where id = %s").format(
                _registry(registry)), (status, note, run_id))
        if cur.rowcount != 1:
            raise IOCError(f"no run {run_id!r} in the registry of namespace {registry.namespace!r}")
    return resolve_run(registry, run_id)


def list_runs(registry: Settings) -> list[RunRecord]:
    """Every registered run, newest first (empty when the registry table does not exist)."""
    from ..storage import connect

    with connect(registry.database, autocommit=True) as conn:
        if not _has_table(conn, registry.db_schema, "runs"):
            return []
        rows = conn.execute(sql.SQL(f"select {_COLS} from {{}} order by started_at desc").format(
            _registry(registry))).fetchall()
    return [RunRecord(*r) for r in rows]


def resolve_run(registry: Settings, name: str) -> RunRecord:
    """The run with id ``name``, or the run held by namespace ``name``.

    Raises:
        IOCError: neither matches.
    """
    from ..storage import connect

    with connect(registry.database, autocommit=True) as conn:
        if not _has_table(conn, registry.db_schema, "runs"):
            raise StorageError(f"schema {registry.db_schema!r} has no runs table (run 'ioc db migrate')")
        row = conn.execute(sql.SQL(f"select {_COLS} from {{}} where id = %s or namespace = %s").format(
            _registry(registry)), (name, name)).fetchone()
    if row is None:
        raise IOCError(f"no run or run namespace {name!r} in the registry of {registry.namespace!r}")
    return RunRecord(*row)


def _has_table(conn: Any, schema: str, table: str) -> bool:
    return conn.execute(
        "select 1 from information_schema.tables where table_schema = %s and table_name = %s",
        (schema, table)).fetchone() is not None
