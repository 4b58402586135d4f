"""Connections and the TimescaleDB-or-plain-PostgreSQL decision."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..config import DatabaseSettings, Settings
from ..errors import StorageError

__all__ = ["StorageFeatures", "connect", "detect_features", "drop_schema"]

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


def detect_features(conn: psycopg.Connection, mode: str = "auto") -> StorageFeatures:
    """Find (and with mode auto/on, enable) TimescaleDB.

    Raises:
        StorageError: mode is "on" and the extension cannot be enabled.
    """
    version = conn.info.server_version
    ts_version = None
    if mode != "off":
        row = conn.execute(
            "select extversion from pg_extension where extname = 'timescaledb'"
        ).fetchone()
        if row is None:
            avail = conn.execute(
                "select 1 from pg_available_extensions where name = 'timescaledb'"
            ).fetchone()
            if avail:
                try:
                    with conn.transaction():
                        conn.execute("create extension if not exists timescaledb")
                    row = conn.execute(
                        "select extversion from pg_extension where extname = 'timescaledb'"
                    ).fetchone()
                except psycopg.Error as exc:
                    log.warning("TimescaleDB is installed but could not be enabled: %s", exc)
        if row:
            ts_version = row[0]
        elif mode == "on":
            raise StorageError(
                "database.timescaledb is 'on' but the timescaledb extension is not available"
            )
    return StorageFeatures(version, ts_version is not None, ts_version)


def drop_schema(settings: Settings) -> None:
    """Drop the namespace's schema (tests and replays); refuses the live namespace."""
    if settings.namespace == "ioc":
        raise ValueError("refusing to drop the schema of the live namespace 'ioc'")
    with connect(settings.database, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.db_schema)))
