"""Migrations of the PostgreSQL store: once each, in order, one node at a time, all or nothing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from poczta.store.postgres.errors import PostgresUnavailable
from poczta.store.postgres.migrate import (
    MIGRATION_LOCK,
    Migration,
    available_migrations,
    latest_version,
    migrate,
    schema_version,
)
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import connect

TABLES = {
    "aliases",
    "blob_chunks",
    "blobs",
    "connection_counts",
    "domains",
    "expunged",
    "greylist_networks",
    "greylist_triplets",
    "login_failures",
    "maildrop_leases",
    "mailboxes",
    "messages",
    "mta_sts_policies",
    "queue",
    "queue_recipients",
    "quota_limits",
    "quota_usage",
    "schema_version",
    "sending_limits",
    "sending_usage",
    "subscriptions",
    "uidvalidity_clock",
    "users",
}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def test_an_empty_database_gets_the_whole_schema_and_a_second_run_changes_nothing(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    async def main() -> None:
        conn = await connect(postgres, postgres_dsn)
        assert await schema_version(conn) == 0
        versions = [number for number, _, _ in available_migrations()]
        assert await migrate(conn) == versions
        assert await _tables(conn) == TABLES
        recorded = await conn.fetch("SELECT version, name FROM schema_version ORDER BY version")
        assert [(r[0], r[1]) for r in recorded] == [(n, f) for n, f, _ in available_migrations()]
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == len(versions)
        assert await schema_version(conn) == latest_version()
        await conn.close()

    asyncio.run(main())


def test_nodes_migrating_at_once_take_turns(postgres: PostgresServer, postgres_dsn: str) -> None:
    # The first migration is slow, so that the second node arrives while it runs.
    slow: list[Migration] = [
        (1, "0001_first.sql", "CREATE TABLE first (x integer); SELECT pg_sleep(0.3);"),
        (2, "0002_second.sql", "CREATE TABLE second (x integer);"),
    ]

    async def main() -> None:
        nodes = [await connect(postgres, postgres_dsn) for _ in range(3)]
        applied = await asyncio.gather(*(migrate(conn, slow) for conn in nodes))
        assert sorted(applied) == [[], [], [1, 2]]
        assert await nodes[0].fetchval("SELECT count(*) FROM schema_version") == 2
        for conn in nodes:
            await conn.close()

    asyncio.run(main())


def test_a_failing_migration_leaves_the_schema_as_it_was(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    broken = (
        "CREATE TABLE half_done (x integer);\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
        "SELECT no_such_function();\n"
    )
    migrations = [*available_migrations(), (latest_version() + 1, "9998_broken.sql", broken)]

    async def main() -> None:
        conn = await connect(postgres, postgres_dsn)
        with pytest.raises(PostgresUnavailable) as failure:
            await migrate(conn, migrations)
        message = str(failure.value)
        assert "\n" not in message
        assert "migration 9998_broken.sql failed at line 3" in message
        assert "no_such_function" in message
        assert await schema_version(conn) == latest_version()
        assert await _tables(conn) == TABLES  # no half_done
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        )
        assert "nickname" not in {row[0] for row in columns}
        # The lock went with the failure: another node may migrate.
        other = await connect(postgres, postgres_dsn)
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK)
        await other.close()
        fixed = broken.replace("SELECT no_such_function();\n", "")
        assert await migrate(
            conn, [*migrations[:-1], (migrations[-1][0], "9998_fixed.sql", fixed)]
        ) == [latest_version() + 1]
        await conn.close()

    asyncio.run(main())


def test_a_schema_newer_than_this_poczta_is_refused(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    newer = latest_version() + 1

    async def main() -> None:
        conn = await connect(postgres, postgres_dsn)
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, 'from-a-newer-poczta.sql')",
            newer,
        )
        with pytest.raises(PostgresUnavailable) as refused:
            await migrate(conn)
        database = postgres_dsn.rpartition("/")[2]
        assert str(refused.value) == (
            f"postgres store: database '{database}' has schema version {newer}, newer than"
            f" this poczta knows ({latest_version()}): upgrade poczta"
        )
        await conn.close()

    asyncio.run(main())


def test_a_migration_that_landed_late_is_still_applied(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    def numbered(*numbers: int) -> list[Migration]:
        return [(n, f"{n:04}_t{n}.sql", f"CREATE TABLE t{n} (x integer);") for n in numbers]

    async def main() -> None:
        conn = await connect(postgres, postgres_dsn)
        assert await migrate(conn, numbered(1, 3)) == [1, 3]
        assert await migrate(conn, numbered(1, 2, 3)) == [2]
        assert {"t1", "t2", "t3"} <= await _tables(conn)
        await conn.close()

    asyncio.run(main())
