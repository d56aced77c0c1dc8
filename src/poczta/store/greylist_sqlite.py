"""Greylisting state in the SQLite database: `SqliteGreylistStore`, a `GreylistStore`.

It has its own connection to the store's database file (WAL) and one thread that runs
every statement, so the event loop never waits on SQLite and the connection is never
shared. Each change is one small autocommit statement. The connection runs with
``synchronous=NORMAL``: in WAL mode that keeps the database consistent, and a crash can
only forget the last greylisting entries -- a sender is then asked to retry once more,
which costs far less than an fsync on every recipient of every attempt.

The tables come from migration 0002; `open` applies pending migrations, so it works on
a new file as well as on one the mail store has already opened.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from poczta.mailauth.greylist import GreylistTriplet, NetworkRecord, TripletRecord
from poczta.store.base import StoreUnavailable
from poczta.store.migrate import migrate
from poczta.store.sqlite_writer import connect, translate_error

__all__ = ["SqliteGreylistStore"]

T = TypeVar("T")

_GET_TRIPLET = (
    "SELECT first_seen, last_seen, expires, passed_at, attempts FROM greylist_triplets"
    " WHERE network = ? AND sender = ? AND recipient = ?"
)
_PUT_TRIPLET = (
    "INSERT OR REPLACE INTO greylist_triplets (network, sender, recipient, first_seen,"
    " last_seen, expires, passed_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_GET_NETWORK = (
    "SELECT passes, last_pass, whitelisted_until, expires FROM greylist_networks WHERE network = ?"
)
_PUT_NETWORK = (
    "INSERT OR REPLACE INTO greylist_networks (network, passes, last_pass,"
    " whitelisted_until, expires) VALUES (?, ?, ?, ?, ?)"
)


class SqliteGreylistStore:
    """`GreylistStore` on the SQLite database at `db_path`; create it with `open`."""

    def __init__(self, db_path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection):
        self.db_path = db_path
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    async def open(cls, db_path: Path | str) -> SqliteGreylistStore:
        """Open (creating if needed) the database and apply pending migrations."""
        path = Path(db_path)
        executor = ThreadPoolExecutor(1, thread_name_prefix="poczta-greylist")

        def prepare() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(path)
            try:
                conn.execute("PRAGMA synchronous = NORMAL")
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, prepare)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise translate_error(exc) from exc
        return cls(path, executor, conn)

    async def close(self) -> None:
        """Close the connection and stop the thread. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("greylist store is closed")

        def call() -> T:
            try:
                return fn(conn)
            except (sqlite3.Error, OSError) as exc:
                raise translate_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def get_triplet(self, triplet: GreylistTriplet) -> TripletRecord | None:
        key = (triplet.network, triplet.sender, triplet.recipient)
        row = await self._run(lambda c: c.execute(_GET_TRIPLET, key).fetchone())
        if row is None:
            return None
        first_seen, last_seen, expires, passed_at, attempts = row
        return TripletRecord(
            triplet,
            float(first_seen),
            float(last_seen),
            float(expires),
            None if passed_at is None else float(passed_at),
            int(attempts),
        )

    async def put_triplet(self, record: TripletRecord) -> None:
        t = record.triplet
        values = (
            t.network,
            t.sender,
            t.recipient,
            record.first_seen,
            record.last_seen,
            record.expires,
            record.passed_at,
            record.attempts,
        )
        await self._run(lambda c: c.execute(_PUT_TRIPLET, values))

    async def get_network(self, network: str) -> NetworkRecord | None:
        row = await self._run(lambda c: c.execute(_GET_NETWORK, (network,)).fetchone())
        if row is None:
            return None
        passes, last_pass, until, expires = row
        return NetworkRecord(network, int(passes), float(last_pass), float(until), float(expires))

    async def put_network(self, record: NetworkRecord) -> None:
        values = (
            record.network,
            record.passes,
            record.last_pass,
            record.whitelisted_until,
            record.expires,
        )
        await self._run(lambda c: c.execute(_PUT_NETWORK, values))

    async def sweep(self, now: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute("DELETE FROM greylist_triplets WHERE expires <= ?", (now,))
                m = conn.execute("DELETE FROM greylist_networks WHERE expires <= ?", (now,))
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            return n.rowcount + m.rowcount

        return await self._run(delete)
