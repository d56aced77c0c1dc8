"""Schema migrations: applied in order at open, once, atomically."""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
import tomllib
from pathlib import Path

import pytest

from poczta.store.sqlite.migrate import available_migrations, current_version, migrate
from poczta.store.sqlite.store import SqliteStore


def test_migrations_are_numbered_in_order() -> None:
    versions = [v for v, _, _ in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_the_migrations_ship_with_the_package() -> None:
    """Each migration file matches a package-data pattern of pyproject.toml, so a wheel
    (not only a source checkout) carries it."""
    project = Path(__file__).resolve().parents[2]
    with open(project / "pyproject.toml", "rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["poczta"]
    package = project / "src" / "poczta"
    files = sorted((package / "store" / "sqlite" / "migrations").glob("*.sql"))
    assert [path.name for path in files] == [name for _, name, _ in available_migrations()]
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns), relative


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


def test_a_migration_that_lands_after_a_higher_one_is_still_applied(tmp_path: Path) -> None:
    import sqlite3

    from poczta.store.sqlite.migrate import migrate

    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    one = (1, "0001_a.sql", "CREATE TABLE a (x);")
    three = (3, "0003_c.sql", "CREATE TABLE c (x);")
    two = (2, "0002_b.sql", "CREATE TABLE b (x);")
    assert migrate(conn, [one, three]) == [1, 3]
    assert migrate(conn, [one, two, three]) == [2]
    assert migrate(conn, [one, two, three]) == []
