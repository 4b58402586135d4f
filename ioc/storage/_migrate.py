"""Versioned schema migrations, applied in order inside the namespace's schema.

A migration is a Python function, not a bare SQL file, because the same version must
create a hypertable with TimescaleDB and a plain table without it. The list is explicit
(``ioc.storage.migrations.MIGRATIONS``); versions are unique and only ever appended.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..config import Settings
from ..errors import MigrationError
from ._db import StorageFeatures, connect, probe_features

__all__ = ["Migration", "MigrationContext", "applied_versions", "migrate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationContext:
    """What a migration needs to know: the schema and the database's features."""

    schema: str
    features: StorageFeatures

    @property
    def timescaledb(self) -> bool:
        return self.features.timescaledb

    def ident(self, name: str) -> sql.Composed:
        """``schema.name`` as a safely quoted identifier."""
        return sql.Identifier(self.schema, name)  # type: ignore[return-value]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[psycopg.Connection, MigrationContext], None]


def applied_versions(conn: psycopg.Connection, schema: str) -> list[int]:
    exists = conn.execute(
        "select 1 from information_schema.tables where table_schema = %s and table_name = 'schema_migrations'",
        (schema,),
    ).fetchone()
    if not exists:
        return []
    return [r[0] for r in conn.execute(
        sql.SQL("select version from {} order by version").format(sql.Identifier(schema, "schema_migrations"))
    )]


def migrate(settings: Settings, migrations: Sequence[Migration] | None = None) -> tuple[StorageFeatures, list[Migration]]:
    """Apply pending migrations to ``settings.db_schema``; return features and what ran.

    Concurrent callers are serialised by an advisory lock per schema.

    Raises:
        MigrationError: a migration failed (its transaction is rolled back).
    """
    if migrations is None:
        from .migrations import MIGRATIONS

        migrations = MIGRATIONS
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise MigrationError(f"migration versions must be unique and increasing, got {versions}")
    schema = settings.db_schema
    ran: list[Migration] = []
    # Detection runs on a connection of its own: whatever enabling TimescaleDB did to
    # that session, the migrations run on a fresh one.
    features = probe_features(settings.database)
    with connect(settings.database, autocommit=True) as conn:
        lock_key = zlib.crc32(f"ioc-migrate:{schema}".encode())
        conn.execute("select pg_advisory_lock(%s)", (lock_key,))
        try:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL(
                "create table if not exists {} (version integer primary key, name text not null, "
                "applied_at timestamptz not null default now())"
            ).format(sql.Identifier(schema, "schema_migrations")))
            done = set(applied_versions(conn, schema))
            ctx = MigrationContext(schema, features)
            for m in migrations:
                if m.version in done:
                    continue
                try:
                    with conn.transaction():
                        m.apply(conn, ctx)
                        conn.execute(
                            sql.SQL("insert into {} (version, name) values (%s, %s)").format(
                                sql.Identifier(schema, "schema_migrations")),
                            (m.version, m.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {m.version} ({m.name}) failed in schema {schema!r}: {exc}"
                    ) from exc
                log.info("applied migration %s %s to schema %s", m.version, m.name, schema)
                ran.append(m)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (lock_key,))
    return features, ran
