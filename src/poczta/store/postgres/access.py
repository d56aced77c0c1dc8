"""Running the PostgreSQL store's work: one transaction per call, errors as the store's own.

`Database` wraps the connection pool. `write(fn)` runs `fn(conn)` inside one transaction
and returns only after its COMMIT (the server's synchronous_commit is left on, so a
commit is on disk before it is acknowledged); `read(fn)` runs it in one read-only
transaction; `statement(fn)` runs one statement without BEGIN and COMMIT (one round trip).

Whatever the driver or the network raise because the database cannot be reached (a
refused or lost connection, a server shutting down, a pool that gives no connection or a
statement that gets no answer within the timeouts) becomes `StoreUnavailable` with one
line saying so; the pool drops broken connections and makes new ones on the next call,
so the store works again by itself once the server is back. A transaction that lost a
deadlock or a serialization conflict is run again a few times before it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from poczta.store.base import LimitExceeded, StoreError, StoreUnavailable

__all__ = ["COMMAND_TIMEOUT", "Database", "equals_any", "translated"]

COMMAND_TIMEOUT = 30.0  # seconds a statement may take before the call fails
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a connection of the pool (or a new one)
_RETRIES = 5  # runs of a transaction that lost a deadlock, a serialization conflict or a lock wait

T = TypeVar("T")

Connection = Any  # an asyncpg.Connection (the driver ships no type hints)

# SQLSTATE classes of a database that cannot be used now: 08 connection exceptions,
# 57 operator intervention (shutdown, cannot connect now), 53 insufficient resources.
_UNAVAILABLE_CLASSES = ("08", "57", "53")
_PROGRAM_LIMIT = "54000"  # a value too large for the database (program_limit_exceeded)
# serialization failure, deadlock detected, a lock not free within `lock_timeout`
_RETRY_STATES = ("40001", "40P01", "55P03")
# What leaves a connection unusable: lost, ended by the server, or out of step with it.
_BROKEN = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def equals_any(
    column: str, values: Sequence[object], param: int, sql_type: str
) -> tuple[str, object]:
    """`column = ANY($param::sql_type[])` and its argument, or `column = $param` and the
    value when `values` has one (nearly every call: one mailbox, message, body, user).

    PostgreSQL plans a prepared statement over an array afresh on every call: its generic
    plan, costed for an array of several elements, never looks cheaper than a custom plan
    for one, and the planning took longer than running these statements. The scalar form
    gets a generic plan and is planned once per connection."""
    if len(values) == 1:
        return f"{column} = ${param}", values[0]
    return f"{column} = ANY(${param}::{sql_type}[])", list(values)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn the failures of an unreachable database into `StoreUnavailable`."""
    try:
        yield
    except StoreError:
        raise
    except asyncpg.PostgresError as exc:
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_CLASSES) or state == "57014":
            raise StoreUnavailable(f"postgres store: {_one_line(exc)}") from exc
        if state == _PROGRAM_LIMIT:  # an index entry over a page: flags, say
            raise LimitExceeded(f"postgres store: {_one_line(exc)}") from exc
        raise
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        # InternalClientError: the driver lost track of a connection the server ended
        # in the middle of an operation ("cannot switch to state ...").
        raise StoreUnavailable(f"postgres store: {_one_line(exc)}") from exc
    except TimeoutError as exc:
        raise StoreUnavailable("postgres store: the database did not answer in time") from exc
    except OSError as exc:
        raise StoreUnavailable(f"postgres store: cannot reach the database: {exc}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Database:
    """The pool and the way every call of the store uses it."""

    def __init__(self, pool: Any, *, acquire_timeout: float = ACQUIRE_TIMEOUT) -> None:
        self.pool = pool
        self._acquire_timeout = acquire_timeout
        self._closed = False

    def check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("mail store is closed")

    async def write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """`fn` in one read-write transaction, committed before this returns."""
        for attempt in range(_RETRIES):
            try:
                return await self._run(fn, readonly=False)
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) not in _RETRY_STATES or attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """`fn` in one read-only transaction (one snapshot for all its statements)."""
        return await self._run(fn, readonly=True)

    async def statement(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """`fn` (one statement) on a pooled connection without BEGIN and COMMIT: its own
        transaction, one round trip, for what sits on the path of every connection."""
        self.check_open()
        with translated():
            async with self.pool.acquire(timeout=self._acquire_timeout) as conn:
                return await fn(conn)

    async def _run(self, fn: Callable[[Connection], Awaitable[T]], *, readonly: bool) -> T:
        self.check_open()
        with translated():
            conn = await self.pool.acquire(timeout=self._acquire_timeout)
            try:
                async with conn.transaction(readonly=readonly):
                    result = await fn(conn)
            except _BROKEN:
                conn.terminate()  # in an unknown state: never handed out again
                raise
            finally:
                # Releasing resets the connection; when that fails the driver drops it,
                # and what committed stays committed: the call does not fail for it.
                with contextlib.suppress(Exception):
                    await self.pool.release(conn)
            return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.pool.close(), COMMAND_TIMEOUT)
        except Exception:  # a server that no longer answers: drop the connections
            self.pool.terminate()
