"""Fixtures that run poczta as a real subprocess and talk to it over loopback sockets.

`store_backend` is the store a module's servers run on: every test that takes it (or a
fixture that does) runs once on SQLite and once on PostgreSQL, unless it is marked
`@pytest.mark.sqlite_only(reason)`: it looks at the embedded store's files or processes,
or what it checks is not the store's doing and a second pass would only cost time.
On PostgreSQL each server gets a database of its own, a copy of one set up per session
with the test users (`CREATE DATABASE ... TEMPLATE`), so that a server costs a copy, not
the argon2 hashes of its users.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.harness import (
    PocztaServer,
    add_test_accounts,
    make_server,
    postgres_store_config,
    remove_sqlite_files,
)

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

BACKENDS = ("sqlite", "postgres")
_databases = itertools.count(1)
#: (hostname, domains) → the session's template database holding that set-up's accounts.
_templates: dict[tuple[str, tuple[str, ...]], str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): run on the embedded store only (store_backend)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    names = ["sqlite"] if only is not None else list(BACKENDS)
    metafunc.parametrize("store_backend", names, indirect=True, scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the session's PostgreSQL early when a collected test runs on it."""
    if config.option.collectonly:
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_backend") == "postgres":
            from tests.conftest import _session_cluster

            _session_cluster().begin()
            return


@dataclass
class StoreBackend:
    """The store of a module's servers: `name` ("sqlite" or "postgres") and, per server,
    the `[store]` table to give `make_server(store=...)` (empty for SQLite)."""

    name: str
    postgres: PostgresServer | None = None

    def config(
        self, hostname: str = "mx.example.test", domains: tuple[str, ...] = ("example.test",)
    ) -> str:
        """A new database with the test accounts of `domains`, as a `[store]` table."""
        if self.postgres is None:
            return ""
        template = _template(self.postgres, hostname, domains)
        name = f"e2e_copy_{next(_databases)}"  # not a name new_database() gives
        self.postgres.admin_sql(f"CREATE DATABASE {name} TEMPLATE {template} OWNER poczta")
        return postgres_store_config(self.postgres.dsn(name), self.postgres.password_file)

    def use_in(self, config_file: Path) -> None:
        """Point the `[store]` of a config `poczta init` wrote at a new empty database (its
        schema made when it is first opened); a SQLite store stays as it is."""
        if self.postgres is None:
            return
        name = self.postgres.new_database("e2e")
        settings = {
            "backend": "postgres",
            "dsn": self.postgres.dsn(name),
            "password_file": str(self.postgres.password_file),
        }
        text = config_file.read_text()
        head, table, rest = text.partition("\n[store]\n")
        assert table, f"{config_file} has no [store] table"
        body, next_table, tail = rest.partition("\n[")
        for key, value in settings.items():
            body, found = re.subn(rf"^{key} = .*$", f'{key} = "{value}"', body, flags=re.M)
            assert found == 1, f"{config_file}: no {key} in [store]"
        config_file.write_text(head + table + body + next_table + tail)

    def fetch(self, server: PocztaServer, query: str) -> list[tuple[object, ...]]:
        """The rows `query` gives in the PostgreSQL database of `server`."""
        assert self.postgres is not None, "a SQLite store has no database to ask"
        dsn = re.search(r'^dsn = "([^"]+)"', server.extra_config, re.MULTILINE)
        assert dsn is not None, "the server has no [store] dsn"
        return asyncio.run(_fetch(dsn[1], self.postgres.password, query))

    def stored_bodies(self, server: PocztaServer) -> int:
        """How many message bodies the server's store keeps."""
        if self.postgres is None:
            return sum(1 for _ in (server.root / "data" / "blobs").glob("??/*"))
        [(count,)] = self.fetch(server, "SELECT count(*) FROM blobs WHERE refs > 0")
        assert isinstance(count, int)
        return count


async def _fetch(dsn: str, password: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, password=password, timeout=10)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def _template(postgres: PostgresServer, hostname: str, domains: tuple[str, ...]) -> str:
    """The template database of this set-up, made (schema, users, aliases) on first use."""
    key = (hostname, domains)
    if key not in _templates:
        name = postgres.new_database("e2e_template")
        root = Path(tempfile.mkdtemp(prefix="poczta-e2e-pg-setup-"))
        try:
            setup = make_server(
                root,
                hostname=hostname,
                domains=domains,
                store=postgres_store_config(postgres.dsn(name), postgres.password_file),
            )
            remove_sqlite_files(setup.root / "data")
            add_test_accounts(setup)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        _templates[key] = name
    return _templates[key]


@pytest.fixture(scope="module")
def store_backend(request: pytest.FixtureRequest) -> Iterator[StoreBackend]:
    # The databases are not dropped (each drop waits for a checkpoint): they go with the
    # session's cluster.
    if request.param == "postgres":
        yield StoreBackend("postgres", request.getfixturevalue("postgres"))
    else:
        yield StoreBackend("sqlite")


@pytest.fixture(scope="module")
def poczta(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    """One running poczta per test module, with alice, bob and a few aliases."""
    server = make_server(tmp_path_factory.mktemp("poczta"), store=store_backend.config())
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


@pytest.fixture
def fresh_poczta(tmp_path: Path) -> Iterator[PocztaServer]:
    """A poczta of its own for tests that stop, kill or reconfigure it."""
    server = make_server(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.kill()
