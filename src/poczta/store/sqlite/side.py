"""Side tables of the SQLite database (greylisting, sending limits): own connection and thread.

A `SideStore` has its own connection to the store's database file (WAL) and one
thread that runs every statement, so the event loop never waits on SQLite, the
connection is never shared, and every worker process sees the same rows. The
connection runs with ``synchronous=NORMAL``: in WAL mode that keeps the database
consistent, and a crash can only forget the last changes, which these tables can
afford (unlike a delivery, which the mail store's writer syncs). `open` applies
pending migrations, so it works on a new file as well as on one the mail store has
already opened. A mail store opens each kind beside it on first use (`SideStores`)
and closes them with itself. A kind may keep its tables in a file of its own
(`file_for`) with a schema of its own (`prepare`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, TypeVar

from poczta.store.base import StoreUnavailable
from poczta.store.sqlite.migrate import migrate
from poczta.store.sqlite.writer import begin_immediate, connect, translate_error

__all__ = ["SideStore", "SideStores"]

T = TypeVar("T")
S = TypeVar("S", bound="SideStore")


class SideStore:
    """The connection and thread of one kind of side table; subclasses add the queries."""

    thread_name: ClassVar[str] = "poczta-side"
    what: ClassVar[str] = "side store"  # for the error once it is closed

    def __init__(self, db_path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection):
        self.db_path = db_path
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    def file_for(cls, db_path: Path) -> Path:
        """The database file this kind keeps its tables in: the mail store's own."""
        return db_path

    @classmethod
    def prepare(cls, conn: sqlite3.Connection) -> None:
        """Make a new connection ready: synchronous=NORMAL, pending migrations applied."""
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)

    @classmethod
    async def open(cls: type[S], db_path: Path | str) -> S:
        """Open (creating if needed) the database and apply pending migrations."""
        path = cls.file_for(Path(db_path))
        executor = ThreadPoolExecutor(1, thread_name_prefix=cls.thread_name)

        def prepare() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(path)
            try:
                cls.prepare(conn)
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
            raise StoreUnavailable(f"{self.what} is closed")

        def call() -> T:
            try:
                return fn(conn)
            except (sqlite3.Error, OSError) as exc:
                raise translate_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` inside BEGIN IMMEDIATE ... COMMIT, rolled back when it raises; the write
        lock is waited for as the connection's busy timeout says (`begin_immediate`)."""

        def run(conn: sqlite3.Connection) -> T:
            begin_immediate(conn)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            return result

        return await self._run(run)


class SideStores:
    """The side stores beside one mail store's database: each kind opened once, on the
    first call for it, and all closed together."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._open: dict[type[SideStore], SideStore] = {}
        self._lock = asyncio.Lock()  # two first calls at once open one store

    async def get(self, kind: type[S]) -> S:
        async with self._lock:
            found = self._open.get(kind)
            if found is None:
                found = self._open[kind] = await kind.open(self.db_path)
        assert isinstance(found, kind)
        return found

    async def close(self) -> None:
        async with self._lock:
            opened, self._open = list(self._open.values()), {}
        for side in opened:
            await side.close()
