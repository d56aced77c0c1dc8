"""The plumbing under every `SqliteStore` method: reader threads and their connections,
the writer, the committer link, and the change feed's poke after a write.

`SqliteStoreCore` is the base the store's parts share (`store_accounts`, `store_queue`
and `store` itself): reads go to the reader pool (`_read`), writes to the writer thread
(`_write`, which lets this process's change watchers know), and a write that may
release bodies asks for a sweep once their grace period is over (`_write_releasing`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from poczta.store.base import StoreUnavailable
from poczta.store.changes import ChangeHub
from poczta.store.sqlite import blob_refs
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.bodies import SqliteBlobStore
from poczta.store.sqlite.change_poller import ChangePoller
from poczta.store.sqlite.committer import CommitterLink
from poczta.store.sqlite.inline import LoopReads
from poczta.store.sqlite.side import SideStores
from poczta.store.sqlite.writer import Job, Writer, connect, translate_error

__all__ = ["SqliteStoreCore"]

T = TypeVar("T")


class SqliteStoreCore:
    """The threads, connections and writer of one SQLite store (see `SqliteStore`)."""

    def __init__(
        self,
        db_path: Path,
        files: BlobFiles,
        *,
        readers: int = 4,
        blob_threads: int = 2,  # blobs.put only; deliveries stage on the loop
        max_batch: int = 512,
        committer: str | None = None,
        blob_grace: float = blob_refs.DEFAULT_GRACE,
    ) -> None:
        self.db_path = db_path
        self._files = files
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="poczta-store-read")
        self._blobs = SqliteBlobStore(
            files,
            readers=self._readers,
            read_db=self._read,
            write_db=self._write,
            check_open=self._check_open,
            grace=blob_grace,
            put_threads=blob_threads,
        )
        # The writer fsyncs a batch's files one after another on its own thread: fanning
        # them out to a pool measured 20-25% slower (thread hand-offs and GIL churn per
        # file cost more than the parallel fsyncs save; after the first, each is cheap).
        self._writer = Writer(db_path, files, max_batch=max_batch)
        # Deliveries go to the committer process when one serves this database (several
        # workers; see `poczta.store.sqlite.committer`); it needs bodies flushed by filesystem.
        self._committer = (
            CommitterLink(committer)
            if committer is not None and files.sync_method == "filesystem"
            else None
        )
        self._hub = ChangeHub()
        self._poller: ChangePoller | None = None
        self._sides = SideStores(db_path)
        self._small = LoopReads(db_path, self._read)  # reads known to be small, on the loop
        self._closed = False

    # --- plumbing --------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path, readonly=True)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("mail store is closed")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()

        def call() -> T:
            try:
                return fn(self._reader())
            except Exception as exc:
                raise translate_error(exc) from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, call)
        except RuntimeError as exc:  # executor shut down under us
            raise StoreUnavailable("mail store is closed") from exc

    async def _write(self, job: Job, sync_dir: Path | None = None) -> Any:
        self._check_open()
        try:
            return await self._writer.submit(job, sync_dir)
        finally:
            self._changed()

    def _changed(self) -> None:
        """This process wrote: let the watchers of changed mailboxes know now."""
        if self._poller is not None:
            self._poller.poke()

    # --- released bodies --------------------------------------------------

    async def _write_releasing(self, job: Job) -> Any:
        """A write that may release bodies: sweep them once their grace period is over."""
        result = await self._write(job)
        self._blobs.sweep_later()
        return result
