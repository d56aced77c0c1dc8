"""Small reads on the event loop's own SQLite connection, and the database's revision.

A read handed to a reader thread costs two thread switches and a wake-up of the loop;
on a busy machine that is 0.1-1 ms, where reading one row by its key costs 20-40 µs.
An IMAP client that pipelines `UID FETCH n BODY.PEEK[]` pays that hand-off several
times per command. So reads whose size is known to be small (a few messages by UID, a
mailbox's version, the changes since a recent MODSEQ) run here, on a connection owned
by the event loop's thread, and everything else still goes to the reader threads. A
read whose result turns out large (`bounded`) is left to a reader thread after all.

In WAL mode readers never wait for writers; the one wait left (another connection
recovering the log after a crash) is not waited for on the loop: the connection has no
busy timeout, and a busy read raises `InlineBusy` so the caller can use a reader thread.

`revision()` is SQLite's ``PRAGMA data_version`` on this connection: it changes
whenever any other connection, of any thread or process, commits. `VersionCache` keeps
mailbox versions read at one revision, valid as long as the revision stands, so that
a session's check for news before each command costs one pragma, not a read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from poczta.store.base import MailboxChange, MailboxId, StoreUnavailable
from poczta.store.sqlite.writer import connect, translate_error

__all__ = ["InlineBusy", "LoopReads", "VersionCache"]

T = TypeVar("T")
Read = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]
INLINE_ROWS = 256  # rows a bounded read takes on the loop before it leaves the rest to a thread


class InlineBusy(Exception):
    """The database was busy for the loop's connection: read on a reader thread instead."""


class LoopReads:
    """The event loop's read-only connection (opened at first use), and the reads on it.

    `threaded` is the store's read on a reader thread, for what is not read here.
    """

    def __init__(self, path: Path, threaded: Read[Any]) -> None:
        self._path = path
        self._threaded = threaded
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._versions = VersionCache()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("mail store is closed")
        if self._conn is None:
            conn = connect(self._path, readonly=True)
            conn.execute("PRAGMA busy_timeout = 0")
            self._conn = conn
        return self._conn

    def revision(self) -> int:
        """A number that changes whenever another connection has committed."""
        try:
            (version,) = self._connection().execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise InlineBusy() from exc
        return int(version)

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the loop's connection; `InlineBusy` when the database is locked."""
        conn = self._connection()
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise InlineBusy() from exc
            raise translate_error(exc) from exc
        except sqlite3.Error as exc:
            raise translate_error(exc) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A small read: here, or on a reader thread when the database is busy."""
        try:
            return self.run(fn)
        except InlineBusy:
            result: T = await self._threaded(fn)
            return result

    async def bounded(self, fn: Callable[[sqlite3.Connection, int | None], list[T]]) -> list[T]:
        """A read of rows that are usually few: here up to `INLINE_ROWS` of them, on a
        reader thread when there are more."""
        try:
            rows = self.run(lambda conn: fn(conn, INLINE_ROWS + 1))
        except InlineBusy:
            rows = None
        if rows is not None and len(rows) <= INLINE_ROWS:
            return rows
        found: list[T] = await self._threaded(lambda conn: fn(conn, None))
        return found

    async def mailbox_version(
        self, mailbox_id: MailboxId, fn: Callable[[sqlite3.Connection], MailboxChange]
    ) -> MailboxChange:
        """`fn`'s version of the mailbox, from memory while the database is unchanged."""
        try:
            revision = self.revision()
        except InlineBusy:
            version: MailboxChange = await self._threaded(fn)
            return version
        known = self._versions.get(revision, mailbox_id)
        if known is None:
            known = await self.read(fn)
            self._versions.put(revision, known)
        return known

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class VersionCache:
    """Mailbox versions read at one database revision."""

    def __init__(self) -> None:
        self._revision: int | None = None
        self._versions: dict[MailboxId, MailboxChange] = {}

    def get(self, revision: int, mailbox_id: MailboxId) -> MailboxChange | None:
        if revision != self._revision:
            self._revision = revision
            self._versions.clear()
            return None
        return self._versions.get(mailbox_id)

    def put(self, revision: int, version: MailboxChange) -> None:
        """Keep `version`, read after `revision` was taken."""
        if revision == self._revision:
            self._versions[version.mailbox_id] = version
