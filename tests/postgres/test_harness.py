"""The test PostgreSQL itself: a cluster of its own, durable settings, passwords required."""

from __future__ import annotations

import asyncio
import os
import pwd

import asyncpg
import pytest

from tests.pg_server import PostgresServer


async def _connect(
    postgres: PostgresServer, database: str, **options: object
) -> asyncpg.Connection:
    return await asyncpg.connect(postgres.dsn(database), timeout=10, **options)


def test_the_cluster_runs_as_an_unprivileged_user(postgres: PostgresServer) -> None:
    assert postgres.proc is not None and postgres.proc.poll() is None
    owner = pwd.getpwuid((postgres.data / "PG_VERSION").stat().st_uid).pw_name
    if os.geteuid() == 0:
        assert owner in ("postgres", "nobody")
    else:
        assert owner == pwd.getpwuid(os.geteuid()).pw_name


def test_commits_are_durable(postgres: PostgresServer) -> None:
    settings = dict(
        postgres.admin_sql(
            "SELECT name, setting FROM pg_settings WHERE name IN"
            " ('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses')"
        )
    )
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "listen_addresses": "127.0.0.1",
    }


def test_the_role_logs_in_with_the_password_of_its_file_only(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    password = postgres.password_file.read_text().splitlines()[0]
    database = postgres_dsn.rpartition("/")[2]

    async def main() -> None:
        conn = await _connect(postgres, database, password=password)
        assert await conn.fetchval("SELECT current_user") == "poczta"
        await conn.close()
        for wrong in ({"password": "not-it"}, {"password": ""}):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await _connect(postgres, database, **wrong)

    asyncio.run(main())


def test_each_test_gets_an_empty_database_of_its_own(postgres: PostgresServer) -> None:
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second

    async def main() -> None:
        conn = await _connect(postgres, first, password=postgres.password)
        await conn.execute("CREATE TABLE only_here (x integer)")
        await conn.close()
        other = await _connect(postgres, second, password=postgres.password)
        tables = await other.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        owner = await other.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )
        await other.close()
        assert (tables, owner) == (0, "poczta")

    asyncio.run(main())
