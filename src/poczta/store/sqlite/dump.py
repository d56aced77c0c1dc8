"""The SQLite store's rows and bodies in the neutral shape of a whole-store copy
(`poczta.store.copy`): read from a store as the copy's source, written into an empty one
as its target.

Plain SQL on connections of its own, not the store's writer: a copy runs with the server
stopped and writes what the store's interface cannot (given ids, UIDs, MODSEQs and
UIDVALIDITYs). The database is opened as the store opens it (`prepare_files`: migrated,
recovered after a crash), so the columns are those of the newest schema. Work is
blocking and short (a batch of rows, one body chunk), done on the event loop of the
command that runs the copy.

A target's bodies are written like the store's own: a temp file renamed to its digest,
made durable before the rows naming it commit (by the store's sync method: one flush of
the filesystem per batch, or an fsync of each file and directory). Derived data is rebuilt
by the target itself: quota usage and each mailbox's message count by the schema's
triggers as the messages go in, the FETCH wire text at the end (`backfill_fetch_text`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from typing import Any

from poczta.store.codec import decode_time, encode_flags, encode_time
from poczta.store.copy.tables import BLOBS, CopyError, Counters, Kind, Row, Table
from poczta.store.sqlite.backfill import backfill_fetch_text
from poczta.store.sqlite.blob_temp import TempArea
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.queue import queue_time
from poczta.store.sqlite.store import prepare_files
from poczta.store.sqlite.writer import connect

__all__ = ["LEFT_OUT", "SqliteTables"]

CHUNK = 256 * 1024  # octets of a body read or written at a time

#: What of the schema is not a column of `TABLES`, and why (None: the whole table).
LEFT_OUT: dict[str, frozenset[str] | None] = {
    "schema_version": None,  # the target's own migrations
    "meta": None,  # only last_uidvalidity, carried as a counter
    "sqlite_sequence": None,  # the highest queue id, carried as a counter
    "unflushed_bodies": None,  # emptied by the recovery when a store opens
    "quota_usage": None,  # kept by triggers as the messages go in
    "mailboxes": frozenset({"messages", "subscribed"}),  # triggers; replaced by subscriptions
    "messages": frozenset({"imap_envelope", "imap_bodystructure"}),  # made at the end
}

_MARKER = "store_copy"


def _neutral(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.BOOL:
        return bool(value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.FLAGS:
        return tuple(sorted(str(value).split()))
    if kind in (Kind.TIME, Kind.QUEUE_TIME, Kind.ZONED_TIME):
        return decode_time(str(value))
    return value


def _stored(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.BOOL:
        return int(value)
    if kind is Kind.FLAGS:
        return encode_flags(value)
    if kind is Kind.QUEUE_TIME:
        return queue_time(value)
    if kind in (Kind.TIME, Kind.ZONED_TIME):
        return encode_time(value)
    return value


class SqliteTables:
    """A SQLite store (its database file and body directory) as a copy's source or target."""

    def __init__(self, db_path: Path, files: BlobFiles, conn: sqlite3.Connection) -> None:
        self.db_path = db_path
        self.description = f"sqlite:{db_path}"
        self._files = files
        self._conn = conn
        self._temp = TempArea(files.root / "tmp")
        # "filesystem": a batch's bodies and names are made durable by one flush before
        # its rows commit, as the store's writer does; "file": each body and directory.
        self._flush_once = files.sync_method == "filesystem"

    @classmethod
    async def open(
        cls, db_path: Path, blob_dir: Path, *, sync: str = "filesystem", create: bool = False
    ) -> SqliteTables:
        """Open the store: a target, made when missing (`create`); else a source, read only
        (CopyError when there is none)."""
        if not create and not db_path.is_file():
            raise CopyError(f"there is no SQLite store at {db_path}")
        files = prepare_files(db_path, blob_dir, sync)
        return cls(db_path, files, connect(db_path, readonly=not create))

    async def close(self) -> None:
        self._temp.release()
        self._files.close()
        self._conn.close()

    # --- reading ----------------------------------------------------------

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[Row]:
        keys = ", ".join(table.key)
        where = ""
        args: list[Any] = []
        if after is not None:
            marks = ", ".join("?" for _ in table.key)
            where = f" WHERE ({keys}) > ({marks})"
            args = list(after)
        sql = (
            f"SELECT {', '.join(table.column_names)} FROM {table.name}{where}"
            f" ORDER BY {keys} LIMIT ?"
        )
        kinds = [column.kind for column in table.columns]
        with self._errors():
            found = self._conn.execute(sql, (*args, limit)).fetchall()
        return [
            tuple(_neutral(kind, value) for kind, value in zip(kinds, row, strict=True))
            for row in found
        ]

    async def read_bodies(self, digests: Sequence[str]) -> AsyncGenerator[tuple[str, bytes], None]:
        for digest in digests:
            try:
                file = open(self._files.path(digest), "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CopyError(f"body {digest} cannot be read: {exc.strerror or exc}") from None
            with file:
                while chunk := file.read(CHUNK):
                    yield digest, chunk

    async def count(self, table: Table) -> int:
        with self._errors():
            return int(self._conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])

    async def counters(self) -> Counters:
        with self._errors():
            found = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'last_uidvalidity'"
            ).fetchone()
            seq = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'queue'"
            ).fetchone()
        return Counters(int(found[0]) if found else 0, int(seq[0]) if seq else 0)

    # --- writing ----------------------------------------------------------

    async def progress(self) -> dict[str, str] | None:
        with self._errors():
            exists = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_MARKER,)
            ).fetchone()
            if exists is None:
                return None
            rows = self._conn.execute(f"SELECT item, value FROM {_MARKER}").fetchall()
        return {str(item): str(value) for item, value in rows}

    async def begin_copy(self, source: str) -> None:
        with self._transaction():
            self._conn.execute(
                f"CREATE TABLE {_MARKER} (item TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.execute(f"INSERT INTO {_MARKER} VALUES ('source', ?)", (source,))

    async def write_rows(self, table: Table, rows: Sequence[Row], mark: str) -> None:
        with self._transaction():
            self._insert(table, rows)
            self._mark(table.name, mark)

    async def write_bodies(
        self, rows: Sequence[Row], bodies: Sequence[AsyncGenerator[bytes, None]], mark: str
    ) -> None:
        directories: set[Path] = set()
        for row, body in zip(rows, bodies, strict=True):
            final = self._files.path(str(row[0]))
            if final.exists():  # a final name only ever holds a complete body
                await body.aclose()
            else:
                await self._write_file(final, body)
            directories.add(final.parent)
        if rows and self._flush_once:
            self._files.flush()
        elif rows:
            self._files.sync_dirs(directories)
        with self._transaction():
            self._insert(BLOBS, rows)
            self._mark(BLOBS.name, mark)

    async def raise_counters(self, counters: Counters) -> None:
        with self._transaction():
            if counters.last_uidvalidity:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_uidvalidity', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value ="
                    " max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (str(counters.last_uidvalidity),),
                )
            updated = self._conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'queue'",
                (counters.last_queue_id,),
            )
            if updated.rowcount == 0 and counters.last_queue_id:
                self._conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('queue', ?)",
                    (counters.last_queue_id,),
                )

    async def finish_copy(self) -> None:
        with self._errors():
            backfill_fetch_text(self._conn)
        with self._transaction():
            self._conn.execute(f"DROP TABLE IF EXISTS {_MARKER}")

    # --- plumbing ---------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """What SQLite refuses as a CopyError of one line."""
        try:
            yield
        except sqlite3.Error as exc:
            raise CopyError(f"{self.description}: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _insert(self, table: Table, rows: Sequence[Row]) -> None:
        names = table.column_names
        marks = ", ".join("?" for _ in names)
        kinds = [column.kind for column in table.columns]
        self._conn.executemany(
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})",
            [tuple(_stored(k, v) for k, v in zip(kinds, row, strict=True)) for row in rows],
        )

    def _mark(self, name: str, mark: str) -> None:
        self._conn.execute(
            f"INSERT INTO {_MARKER} (item, value) VALUES (?, ?)"
            " ON CONFLICT (item) DO UPDATE SET value = excluded.value",
            (name, mark),
        )

    async def _write_file(self, final: Path, body: AsyncGenerator[bytes, None]) -> None:
        temp = self._temp.new_path(final.name)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            async for chunk in body:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if not self._flush_once:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        os.replace(temp, final)
