"""What a call of the PostgreSQL store gives when the connection under it breaks: the
store's own StoreUnavailable, the broken connection never handed out again, and a
commit that went through never reported as failed because the connection's reset did not.

The pool and connections here are stand-ins for asyncpg's, failing the way the driver
does when the server ends a session in the middle of an operation.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import asyncpg
import pytest

from poczta.store.base import StoreUnavailable
from poczta.store.postgres.access import Database

OUT_OF_STEP = "cannot switch to state 15; another operation (2) is in progress"


class _Transaction:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.conn.committed = True


class _Connection:
    def __init__(self) -> None:
        self.committed = False
        self.terminated = False

    def transaction(self, readonly: bool = False) -> _Transaction:
        return _Transaction(self)

    def terminate(self) -> None:
        self.terminated = True


class _Pool:
    """Hands out one connection; `release_fails` makes giving it back fail, as a failed
    reset of the connection does."""

    def __init__(self, release_fails: bool = False) -> None:
        self.conn = _Connection()
        self.release_fails = release_fails
        self.released = 0

    async def acquire(self, timeout: float | None = None) -> _Connection:
        return self.conn

    async def release(self, conn: _Connection) -> None:
        self.released += 1
        if self.release_fails:
            conn.terminate()  # what asyncpg does before it raises
            raise asyncpg.InternalClientError(OUT_OF_STEP)


def _write(pool: _Pool, fn: Any) -> Any:
    return asyncio.run(Database(pool).write(fn))


def test_a_connection_out_of_step_with_the_server_is_unavailable_and_dropped() -> None:
    pool = _Pool()

    async def out_of_step(conn: _Connection) -> None:
        raise asyncpg.InternalClientError(OUT_OF_STEP)

    with pytest.raises(StoreUnavailable, match="another operation"):
        _write(pool, out_of_step)
    assert pool.conn.terminated and not pool.conn.committed
    assert pool.released == 1


def test_a_lost_connection_is_unavailable_and_dropped() -> None:
    pool = _Pool()

    async def lost(conn: _Connection) -> None:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    with pytest.raises(StoreUnavailable):
        _write(pool, lost)
    assert pool.conn.terminated


def test_what_committed_is_not_failed_by_a_reset_that_did_not_work() -> None:
    pool = _Pool(release_fails=True)

    async def work(conn: _Connection) -> str:
        return "done"

    assert _write(pool, work) == "done"
    assert pool.conn.committed


def test_an_error_of_the_statement_itself_keeps_the_connection() -> None:
    pool = _Pool()

    async def duplicate(conn: _Connection) -> None:
        raise asyncpg.UniqueViolationError("duplicate key value")

    with pytest.raises(asyncpg.UniqueViolationError):
        _write(pool, duplicate)
    assert not pool.conn.terminated and pool.released == 1
