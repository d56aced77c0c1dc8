"""Fixtures shared by every test directory: the session's PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer, SessionCluster

# Made when first wanted, so that a run without PostgreSQL tests does not import its harness.
_cluster: SessionCluster | None = None


def _session_cluster() -> SessionCluster:
    global _cluster
    if _cluster is None:
        from tests.pg_server import SessionCluster

        _cluster = SessionCluster()
    return _cluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the cluster now, in the background, when a collected test will use it."""
    if config.option.collectonly:
        return
    if any("postgres" in getattr(item, "fixturenames", ()) for item in items):
        _session_cluster().begin()


def pytest_sessionfinish() -> None:
    if _cluster is not None:
        _cluster.end()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL for the session (skips when it is not installed): `dsn(name)`
    for a database, `new_database()` for a fresh one, `password_file` for the password."""
    yield _session_cluster().server()


@pytest.fixture
def postgres_dsn(postgres: PostgresServer) -> str:
    """The URL (without the password) of a new empty database for this test."""
    return postgres.dsn(postgres.new_database())
