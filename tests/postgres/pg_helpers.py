"""Shared helpers of the PostgreSQL tests: connections to a test's database."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from poczta.config_schema import StoreSettings
from tests.pg_server import PostgresServer


async def connect(postgres: PostgresServer, dsn: str) -> asyncpg.Connection:
    """A connection as the test role, with the password of its file."""
    return await asyncpg.connect(dsn, password=postgres.password, timeout=10)


def store_settings(postgres: PostgresServer, dsn: str, data_dir: Path) -> StoreSettings:
    """`[store]` for the database at `dsn`, the password in a file of `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = data_dir / "pg-password"
    secret.write_text(postgres.password + "\n")
    secret.chmod(0o600)
    return StoreSettings(backend="postgres", dsn=dsn, password_file=secret.name)
