"""Fixtures shared by every test directory: the session's PostgreSQL server, and poczta's
logging as each test found it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

# No property test fails for taking long: an example's time says how busy the machine (or the
# other test worker) is, not whether the property holds.
settings.register_profile("poczta", deadline=None)
settings.load_profile("poczta")

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


@pytest.fixture(autouse=True)
def _poczta_logging_restored() -> Iterator[None]:
    """Undo what a test, or a command it runs in this process, did to poczta's logging:
    after `setup_logging` lines go straight to stderr, past `logging` and so past caplog,
    in every later test of the process (which ones those are depends on the order)."""
    from poczta import logs

    logger = logging.getLogger("poczta")
    saved = (logs._DIRECT, dict(logs._CONTEXT), logger.handlers[:], logger.level, logger.propagate)
    yield
    logs._DIRECT, context, logger.handlers[:], level, logger.propagate = saved
    logger.setLevel(level)
    logs._CONTEXT.clear()
    logs._CONTEXT.update(context)
