"""Connections and the TimescaleDB-or-plain-PostgreSQL decision."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..config import DatabaseSettings, Settings
from ..errors import StorageError

__all__ = [
    "PRELOAD_HINT",
    "SessionClosed",
    "StorageFeatures",
    "TimescaleState",
    "connect",
    "detect_features",
    "drop_schema",
    "probe_features",
    "timescale_plan",
]

log = logging.getLogger(__name__)


def connect(db: DatabaseSettings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection; StorageError (without the DSN's secrets) when it fails."""
    try:
        return psycopg.connect(
            db.dsn.get_secret_value(), autocommit=autocommit, **db.connect_kwargs()  # type: ignore[arg-type]
        )
    except psycopg.Error as exc:
        # libpq messages never include the password; the DSN itself is not repeated.
        raise StorageError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc


async def connect_async(db: DatabaseSettings, *, autocommit: bool = False) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(
            db.dsn.get_secret_value(), autocommit=autocommit, **db.connect_kwargs()  # type: ignore[arg-type]
        )
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc


PRELOAD_HINT = (
    "add it to postgresql.conf: shared_preload_libraries = 'timescaledb' "
    "(next to any libraries already listed), then restart PostgreSQL"
)


@dataclass(frozen=True)
class StorageFeatures:
    """What the database offers; ``timescaledb`` decides hypertables vs plain tables."""

    server_version: int
    timescaledb: bool
    timescaledb_version: str | None

    def describe(self) -> str:
        major = self.server_version // 10000
        if self.timescaledb:
            return f"PostgreSQL {major} with TimescaleDB {self.timescaledb_version}"
        return f"PostgreSQL {major} without TimescaleDB (plain tables, date_bin)"


@dataclass(frozen=True)
class TimescaleState:
    """What the server says about TimescaleDB, read without loading the extension.

    ``preloaded`` is true when the server started with the loader in
    ``shared_preload_libraries``: only then can ``create extension`` succeed (without it
    TimescaleDB raises FATAL and the server closes the session).
    """

    created: bool  # in pg_extension of this database
    available: bool  # its control file is installed on the server
    preloaded: bool


def timescale_plan(mode: str, state: TimescaleState) -> tuple[str, str | None]:
    """Decide, without I/O, what to do: ``("use" | "create" | "plain", problem)``.

    ``problem`` is the reason TimescaleDB is not used (None when it is, or when it is
    simply not installed in mode auto). Pure so that every combination is unit-tested.

    Raises:
        StorageError: mode "on" and TimescaleDB cannot be used; or the extension is
            created in this database but not preloaded (any mode but "off": plain
            tables cannot be made either, TimescaleDB's event triggers need its library).
    """
    if mode == "off":
        return "plain", None
    if state.created and not state.preloaded:
        raise StorageError(
            "the timescaledb extension is created in this database but the server does not "
            f"preload its library, so no table can be created or written; {PRELOAD_HINT}"
        )
    if state.created:
        return "use", None
    if not state.available:
        problem = "the timescaledb extension is not installed on the server"
    elif not state.preloaded:
        problem = f"TimescaleDB is installed on the server but not preloaded; {PRELOAD_HINT}"
    else:
        return "create", None
    if mode == "on":
        raise StorageError(f"database.timescaledb is 'on' and cannot be honoured: {problem}")
    return "plain", problem


def _timescale_state(conn: psycopg.Connection) -> TimescaleState:
    created = conn.execute(
        "select 1 from pg_extension where extname = 'timescaledb'").fetchone() is not None
    available = conn.execute(
        "select 1 from pg_available_extensions where name = 'timescaledb'").fetchone() is not None
    # The loader defines this postmaster-level setting in its _PG_init, so it is listed
    # in pg_settings only when the library was preloaded (a placeholder would not be
    # listed). shared_preload_libraries itself is readable by superusers only.
    preloaded = conn.execute(
        "select 1 from pg_settings where name = 'timescaledb.bgw_launcher_poll_time'"
    ).fetchone() is not None
    return TimescaleState(created, available, preloaded)


def _extversion(conn: psycopg.Connection) -> str | None:
    row = conn.execute("select extversion from pg_extension where extname = 'timescaledb'").fetchone()
    return None if row is None else str(row[0])


def detect_features(conn: psycopg.Connection, mode: str = "auto") -> StorageFeatures:
    """Find (and with mode auto/on, enable) TimescaleDB; ``conn`` stays usable.

    ``create extension`` is only tried when the server preloads TimescaleDB, so the
    FATAL "must be preloaded" error (which closes the session) is never provoked; auto
    falls back to plain tables with one warning saying what to add to postgresql.conf.
    Should the server close the session anyway, StorageError says so (never a later
    "the connection is closed").

    Raises:
        StorageError: see :func:`timescale_plan`; or enabling the extension failed in
            mode "on", or closed the session.
    """
    version = conn.info.server_version
    if mode == "off":
        return StorageFeatures(version, False, None)
    action, problem = timescale_plan(mode, _timescale_state(conn))
    ts_version = _extversion(conn) if action == "use" else None
    if action == "create":
        try:
            with conn.transaction():
                conn.execute("create extension if not exists timescaledb")
            ts_version = _extversion(conn)
        except psycopg.Error as exc:
            why = f"create extension timescaledb: {str(exc).strip()}"
            if conn.closed:
                raise SessionClosed(f"TimescaleDB could not be enabled and the server closed "
                                    f"the session ({why})") from exc
            if mode == "on":
                raise StorageError(f"TimescaleDB could not be enabled ({why})") from exc
            problem = f"create extension timescaledb failed: {str(exc).strip()}"
    if problem is not None and mode == "auto" and "not installed" not in problem:
        _warn_once(f"TimescaleDB is not used, plain tables instead: {problem}")
    return StorageFeatures(version, ts_version is not None, ts_version)


class SessionClosed(StorageError):
    """Enabling TimescaleDB made the server close the session; open a fresh one."""


def probe_features(db: DatabaseSettings) -> StorageFeatures:
    """:func:`detect_features` on a connection of its own, closed before returning.

    Callers then work on a fresh connection, whatever happened to this one: in mode
    auto a session the server closed while enabling TimescaleDB means plain tables
    (with a warning), in mode "on" it is a StorageError.
    """
    with connect(db, autocommit=True) as conn:
        try:
            return detect_features(conn, db.timescaledb)
        except SessionClosed as exc:
            if db.timescaledb == "on":
                raise
            _warn_once(f"TimescaleDB is not used, plain tables instead: {exc}; {PRELOAD_HINT}")
            server_version = conn.info.server_version
    return StorageFeatures(server_version, False, None)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    # One warning per process and reason: migrate, status and the health check all detect.
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def drop_schema(settings: Settings) -> None:
    """Drop the namespace's schema (tests and replays); refuses the live namespace."""
    if settings.namespace == "ioc":
        raise ValueError("refusing to drop the schema of the live namespace 'ioc'")
    drop = sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.db_schema))
    with connect(settings.database, autocommit=True) as conn:
        if conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone():
            # TimescaleDB's scheduler updates the stats rows of the schema's jobs while the
            # cascade deletes them ("tuple concurrently deleted"): delete the jobs first.
            conn.execute("select delete_job(job_id) from timescaledb_information.jobs "
                         "where hypertable_schema = %s", (settings.db_schema,))
        for attempt in range(3):
            try:
                conn.execute(drop)
                return
            except psycopg.errors.InternalError_ as exc:
                if attempt == 2 or "concurrently" not in str(exc):
                    raise
                time.sleep(0.5)
