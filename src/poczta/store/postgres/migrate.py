"""Schema migrations of the PostgreSQL store: numbered SQL files, each applied once, in one
transaction, by one node at a time.

Each file in `migrations/` is named `NNNN_description.sql`. `migrate` takes a session
advisory lock first, so that of several nodes starting at once one migrates and the
others wait and then find nothing left to do. It applies, in ascending order, every file
whose number is not yet in `schema_version`, each in its own transaction together with
its `schema_version` row: PostgreSQL's DDL is transactional, so a migration that fails
leaves the schema as it was before it. A database whose schema is newer than every file
known here is refused (`ensure_known`): this poczta would not know what the newer one
changed.

The file loader is this package's own: the SQLite store's is tied to its own folder and
its files' dialect.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from poczta.store.postgres.errors import PostgresUnavailable

__all__ = [
    "MIGRATION_LOCK",
    "Migration",
    "available_migrations",
    "ensure_known",
    "latest_version",
    "migrate",
    "schema_version",
]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

#: The advisory lock key of migrations: "poczta" in ASCII, then 1.
MIGRATION_LOCK = 0x706F637A74610001

Migration = tuple[int, str, str]  # (version, file name, SQL text)

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied timestamptz NOT NULL DEFAULT now())"
)


def available_migrations() -> list[Migration]:
    """The packaged migrations, ordered by version."""
    found: list[Migration] = []
    folder = resources.files("poczta.store.postgres").joinpath("migrations")
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    return found


def latest_version(migrations: list[Migration] | None = None) -> int:
    """The newest schema version this poczta can make."""
    listed = available_migrations() if migrations is None else migrations
    return max((number for number, _, _ in listed), default=0)


async def schema_version(conn: Any) -> int:
    """The database's schema version: its newest applied migration, 0 when it has none."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def ensure_known(conn: Any, migrations: list[Migration] | None = None) -> int:
    """The schema version, or PostgresUnavailable when it is newer than this poczta's."""
    version = await schema_version(conn)
    known = latest_version(migrations)
    if version > known:
        database = await conn.fetchval("SELECT current_database()")
        raise PostgresUnavailable(
            f"database {database!r} has schema version {version}, newer than this poczta"
            f" knows ({known}): upgrade poczta"
        )
    return version


async def migrate(conn: Any, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the pending migrations in order; return the versions applied (none when
    another node applied them while this one waited for the lock)."""
    listed = available_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_VERSION_TABLE)
        await ensure_known(conn, listed)
        done = {int(row[0]) for row in await conn.fetch("SELECT version FROM schema_version")}
        applied: list[int] = []
        for number, name, sql in listed:
            if number not in done:
                await _apply(conn, number, name, sql)
                applied.append(number)
        return applied
    finally:
        if not conn.is_closed():  # a lost connection took its lock with it
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _apply(conn: Any, number: int, name: str, sql: str) -> None:
    import asyncpg

    try:
        async with conn.transaction():
            await conn.execute(sql)  # no arguments: several statements in one go
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)", number, name
            )
    except asyncpg.PostgresError as exc:
        position = getattr(exc, "position", None)  # a character offset into `sql`, as text
        where = f" at line {sql[: int(position)].count(chr(10)) + 1}" if position else ""
        raise PostgresUnavailable(
            f"migration {name} failed{where}: {exc}; the schema is left at the version before it"
        ) from None
