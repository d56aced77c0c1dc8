"""The embedded backend's `BlobStore`: the body files, with their references in the database.

Bodies are files named by digest (`poczta.store.sqlite.blobs`). Whether one is still
used is counted in the database by the writes that add and drop its users, in their own
transactions (`poczta.store.sqlite.blob_refs`), so a sweep needs the database as well as
the files; it runs through the store's reads and writer. A delivery does not come here:
it stages its body and the writer makes it durable with its batch (see
`poczta.store.sqlite.store`).

Known-small bodies are read on the event loop: a page-cache read of a few KiB costs less
than the hand-off to a reader thread (POP3 RETR of a typical message); big or unknown
ones are read on the store's reader threads. `put` writes and fsyncs on a small pool of
threads of its own.

The store sweeps by itself: a write that may release bodies asks for a sweep once their
grace period is over (`sweep_later`), and at most one is pending or running at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from poczta.store.sqlite import blob_refs
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.writer import Job
from poczta.store.sweeps import SweepSchedule

__all__ = ["INLINE_READ_LIMIT", "SqliteBlobStore"]

INLINE_READ_LIMIT = 256 * 1024


ReadReleasable = Callable[[Callable[[sqlite3.Connection], bool]], Awaitable[bool]]


class SqliteBlobStore:
    """`BlobStore` of a `SqliteStore`: `files` and the store's database, reads and state."""

    def __init__(
        self,
        files: BlobFiles,
        *,
        readers: Executor,
        read_db: ReadReleasable,
        write_db: Callable[[Job], Awaitable[Any]],
        check_open: Callable[[], None],
        grace: float = blob_refs.DEFAULT_GRACE,
        put_threads: int = 2,
    ) -> None:
        self.files = files
        self.grace = grace
        self._readers = readers
        self._read_db = read_db
        self._write_db = write_db
        self._check_open = check_open
        self._put_pool = ThreadPoolExecutor(put_threads, thread_name_prefix="poczta-store-blob")
        self._sweeps = SweepSchedule(self.sweep, grace)

    async def put(self, data: bytes) -> str:
        self._check_open()
        digest, _ = await asyncio.get_running_loop().run_in_executor(
            self._put_pool, self.files.put, data
        )
        return digest

    async def read(self, digest: str, *, size_hint: int | None = None) -> bytes:
        self._check_open()
        if size_hint is not None and size_hint <= INLINE_READ_LIMIT:
            return self.files.read(digest, size_hint)
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, self.files.read, digest, size_hint
        )

    async def read_many(self, bodies: Sequence[tuple[str, int | None]]) -> list[bytes]:
        """Each body as `read` reads it: files need no batching."""
        self._check_open()
        read = self.files.read
        found: list[bytes] = []
        for digest, size in bodies:
            if size is not None and size <= INLINE_READ_LIMIT:
                found.append(read(digest, size))
            else:
                found.append(await self.read(digest, size_hint=size))
        return found

    async def sweep(self, now: float | None = None) -> int:
        """Delete the bodies released longer ago than the grace period, a batch per
        transaction (see `blob_refs`); return how many went."""
        cutoff = (time.time() if now is None else now) - self.grace
        swept = 0
        while await self._read_db(lambda c: blob_refs.releasable(c, cutoff)):
            count: int = await self._write_db(blob_refs.sweep_job(cutoff))
            swept += count
            if count < blob_refs.SWEEP_BATCH:
                break
        return swept

    def sweep_later(self, delay: float | None = None) -> None:
        """Sweep in `delay` seconds (None: once bodies released now may go)."""
        self._sweeps.later(delay)

    async def stop_sweeping(self) -> None:
        """No more sweeps by itself; wait for the one running, if any."""
        await self._sweeps.stop()

    def close(self) -> None:
        """Wait for the bodies being put, then release the files' temp directory."""
        self._put_pool.shutdown(wait=True)
        self.files.close()
