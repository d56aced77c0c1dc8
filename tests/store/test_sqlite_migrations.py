"""Schema migrations: applied in order at open, once, atomically."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.store.migrate import available_migrations, current_version, migrate
from poczta.store.sqlite import SqliteStore


def test_migrations_are_numbered_in_order() -> None:
    versions = [v for v, _, _ in available_migrations()]
    assert versions and versions[0] == 1
    assert versions == sorted(set(versions))  # unique and increasing (one may be held back)


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    versions = [v for v, _, _ in available_migrations()]
    assert migrate(conn) == versions
    assert migrate(conn) == []
    assert current_version(conn) == versions[-1]
    rows = conn.execute("SELECT count(*) FROM schema_version").fetchone()
    assert rows[0] == len(versions)


def test_failed_migration_leaves_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    base = available_migrations()
    broken = (base[-1][0] + 1, "9999_broken.sql", "CREATE TABLE extra (x);\nNOT SQL;")
    with pytest.raises(sqlite3.Error):
        migrate(conn, [*base, broken])
    assert current_version(conn) == base[-1][0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables


def test_reopening_keeps_data(tmp_path: Path) -> None:
    async def main() -> None:
        for _ in range(2):
            store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
            if not await store.domain_exists("example.com"):
                await store.add_domain("example.com")
            assert await store.list_domains() == ["example.com"]
            await store.close()

    asyncio.run(main())
