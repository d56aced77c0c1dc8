"""Fixtures for the store contract suite: one `backend` per MailStore implementation.

Every test that takes `backend` runs on each backend, unless its module (or the test)
names the ones it is for: `pytestmark = pytest.mark.backends("sqlite")`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.store.store_helpers import BACKENDS, Backend

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run the contract tests on these store backends only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = list(marker.args) if marker is not None else list(BACKENDS)
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"unknown store backends {sorted(unknown)}")
    metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(scope="session")
def store_template(postgres: PostgresServer) -> str:
    """A database with the store's schema, migrated once: each test's is a copy of it."""
    from poczta.store.postgres.migrate import migrate
    from tests.postgres.pg_helpers import connect

    name = postgres.new_database("store_template")

    async def prepare() -> None:
        conn = await connect(postgres, postgres.dsn(name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    return name


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        template = request.getfixturevalue("store_template")
        name = f"store_{next(_numbers)}"
        server.admin_sql(f"CREATE DATABASE {name} TEMPLATE {template} OWNER poczta")
        yield Backend("postgres", tmp_path, server, server.dsn(name))
    else:
        yield Backend(request.param, tmp_path)
