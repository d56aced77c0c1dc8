"""Connecting to the PostgreSQL store: the password from a file or $PGPASSWORD, and one
clear line, naming the setting to fix, for each way it fails."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from poczta.config_schema import StoreSettings
from poczta.store import StoreUnavailable
from poczta.store.postgres.connect import check_database, connect, create_pool
from poczta.store.postgres.errors import PostgresUnavailable
from poczta.store.postgres.migrate import latest_version, migrate
from tests.e2e.harness import free_port
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import store_settings


def failure(settings: StoreSettings, data_dir: Path, **options: object) -> PostgresUnavailable:
    """What connecting with `settings` raises; it must be one line without the password."""

    async def attempt() -> None:
        conn = await connect(settings, data_dir, **options)  # type: ignore[arg-type]
        await conn.close()

    with pytest.raises(PostgresUnavailable) as raised:
        asyncio.run(attempt())
    assert isinstance(raised.value, StoreUnavailable)
    assert "\n" not in str(raised.value)
    return raised.value


def test_the_password_comes_from_its_file_or_the_environment(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    from_file = store_settings(postgres, postgres_dsn, tmp_path)
    from_environment = replace(from_file, password_file="")

    async def main() -> None:
        pool = await create_pool(from_file, tmp_path, environ={})
        assert await pool.fetchval("SELECT current_user") == "poczta"
        await pool.close()
        conn = await connect(from_environment, tmp_path, environ={"PGPASSWORD": postgres.password})
        assert await conn.fetchval("SELECT current_database()") == postgres_dsn.rpartition("/")[2]
        await conn.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("mysql://poczta@db.example/mail", "the URL must start with postgresql://, not 'mysql'"),
        ("db.example:5432", "the URL must start with postgresql://, not 'db.example'"),
        ("", "the URL must look like postgresql://USER@HOST:PORT/DATABASE"),
        ("postgresql://poczta@db.example:port/mail", "the URL is malformed: Port could not be"),
        ("postgresql://poczta@127.0.0.1:99999/mail", "the URL is malformed: Port out of range"),
        ("postgresql://poczta@127.0.0.1/mail?sslmode=sometimes", "the URL is malformed: `sslmode`"),
    ],
)
def test_a_malformed_url(tmp_path: Path, dsn: str, reason: str) -> None:
    error = failure(StoreSettings(backend="postgres", dsn=dsn), tmp_path, environ={})
    assert error.key == "dsn"
    assert error.reason.startswith(reason)


def test_a_wrong_password(postgres: PostgresServer, postgres_dsn: str, tmp_path: Path) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    (tmp_path / settings.password_file).write_text("not-the-password\n")
    where = postgres_dsn.removeprefix("postgresql://")
    error = failure(settings, tmp_path, environ={"PGPASSWORD": postgres.password})
    assert (error.key, error.reason) == (
        "password_file",
        f"{where}: the server refused the password of poczta (check [store] password_file)",
    )
    without_file = replace(settings, password_file="")
    error = failure(without_file, tmp_path, environ={"PGPASSWORD": "not-it-either"})
    assert (error.key, error.reason) == (
        "dsn",
        f"{where}: the server refused the password of poczta (check $PGPASSWORD)",
    )
    error = failure(without_file, tmp_path, environ={})
    assert error.reason.endswith("(no password is given: set [store] password_file or $PGPASSWORD)")
    assert postgres.password not in str(error)


def test_an_unusable_password_file(postgres: PostgresServer, tmp_path: Path) -> None:
    settings = store_settings(postgres, postgres.dsn(), tmp_path)
    secret = tmp_path / settings.password_file
    secret.chmod(0o644)
    error = failure(settings, tmp_path, environ={})
    assert (error.key, error.reason) == (
        "password_file",
        f"{secret}: readable by others (mode 644); chmod 600 it",
    )
    secret.chmod(0o600)
    secret.write_text("\n")
    assert failure(settings, tmp_path).reason == f"{secret}: its first line is empty"
    secret.unlink()
    assert failure(settings, tmp_path).reason == (
        f"{secret}: cannot read it: No such file or directory"
    )


def test_an_unreachable_server(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = StoreSettings(backend="postgres", dsn=f"postgresql://poczta@127.0.0.1:{port}/mail")
    error = failure(settings, tmp_path, environ={})
    assert (error.key, error.reason) == (
        "dsn",
        f"cannot connect to 127.0.0.1:{port}: Connection refused",
    )


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_server_that_does_not_answer(tmp_path: Path) -> None:
    with silent_server() as port:
        dsn = f"postgresql://poczta@127.0.0.1:{port}/mail?sslmode=disable"
        settings = StoreSettings(backend="postgres", dsn=dsn)
        error = failure(settings, tmp_path, environ={}, timeout=0.2)
    assert error.reason == f"127.0.0.1:{port} does not answer (waited 0.2 seconds)"


def test_a_database_that_does_not_exist(postgres: PostgresServer, tmp_path: Path) -> None:
    settings = store_settings(postgres, postgres.dsn("no_such_db"), tmp_path)
    error = failure(settings, tmp_path)
    assert error.reason == (
        f"poczta@127.0.0.1:{postgres.port}/no_such_db: there is no database 'no_such_db'"
        f" on 127.0.0.1:{postgres.port}"
    )


def test_the_check_reads_the_schema_version_and_refuses_a_newer_one(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        empty = await check_database(settings, tmp_path)
        assert (empty.schema_version, empty.known_version) == (0, latest_version())
        assert empty.server_version.split(".")[0].isdigit()
        conn = await connect(settings, tmp_path)
        await migrate(conn)
        assert (await check_database(settings, tmp_path)).schema_version == latest_version()
        await conn.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, '9999_future.sql')",
            latest_version() + 1,
        )
        await conn.close()
        with pytest.raises(PostgresUnavailable) as newer:
            await check_database(settings, tmp_path)
        assert newer.value.key == "dsn"
        assert f"schema version {latest_version() + 1}, newer than this poczta" in str(newer.value)

    asyncio.run(main())


def test_the_check_sees_a_role_that_may_not_migrate(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    database = postgres_dsn.rpartition("/")[2]
    postgres.admin_sql(f"ALTER DATABASE {database} OWNER TO admin")
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    with pytest.raises(PostgresUnavailable) as refused:
        asyncio.run(check_database(settings, tmp_path))
    assert str(refused.value).endswith(
        f"the schema is at version 0 of {latest_version()}, and poczta may not create"
        " tables in schema public to migrate it"
    )
