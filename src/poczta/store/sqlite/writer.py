"""The SQLite store's single writer: one thread, one connection, group commit of queued jobs.

Every change to the database is a *job*: a function run on the writer's connection.
The writer thread takes all the jobs waiting in its queue (up to `max_batch`) and runs
them inside one `BEGIN IMMEDIATE … COMMIT`: first without savepoints, and if a job
fails, once more from the start with a savepoint per job so that its error rolls back
that job alone (one statement less per job on the common path). It fsyncs the blob
directories the batch's jobs depend on, commits, makes the commit durable (below), then
runs the after-commit actions and hands every caller its own result or error on its
event loop.

A failure of the transaction as a whole (the commit, a directory fsync, a broken disk)
fails every job of the batch with `StoreUnavailable`, and nothing of it is visible.

Durability of the commit depends on the blob store's sync method. With ``"file"`` the
connection runs with synchronous=FULL: the bodies are fsync'd before the transaction
and COMMIT fsyncs the log, inside the write lock. With ``"filesystem"`` it runs with
synchronous=NORMAL (in WAL mode: consistent after a power loss, but the last commits
may be lost): the batch's bodies are renamed into place, its rows committed, and one
syncfs after the COMMIT, outside the write lock, makes bodies, names and rows durable
before anyone is answered. One flush per batch on the way to every answer, and none
inside the lock every worker waits for. Since that flush has no order within it, the
transaction also lists the batch's new bodies in `unflushed_bodies`; the next
transaction unlists them, and a store opened after a crash checks the listed ones
(`poczta.store.sqlite.recovery`). If a flush fails, the batch's callers get
`StoreUnavailable` although its rows are visible, and its bodies stay listed: a client
then sends the message again, which at worst duplicates it. Readers can see a batch's
rows in the moment before its flush; after a power loss `poczta.store.sqlite.shutdown`
keeps the UIDs and MODSEQs they saw from being handed out again.

A batch that placed no body (flag changes, expunges, copies: most of IMAP's writes)
needs no flush of the filesystem, which on a busy disk costs ten times an fsync: its
COMMIT runs with synchronous=FULL, which fsyncs the log (and with it every commit
before) inside the lock, and it is answered right after. Durable before answered
still holds; a batch whose jobs wrote nothing (a claim with nothing to claim) costs
no fsync at all.

A server with several workers runs deliveries, its hot path, through one writer in a
process of its own, the committer (`poczta.store.sqlite.committer`), which drives a `Writer`
without a thread through `run_batch`; each worker keeps its own writer for the rest.
The writers of several processes (the committer, the workers) take turns through an
``flock`` on `<database>.writelock` before ``BEGIN IMMEDIATE``: a waiting writer sleeps
in the kernel and wakes the moment the other commits, where SQLite's busy handling can
only poll. Connections that do not take the flock (an admin command, the greylist) are
still serialised by SQLite itself; `begin_immediate` polls in short steps for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poczta.store.base import StoreError, StoreUnavailable
from poczta.store.sqlite.blobs import BlobFiles, StagedBlob
from poczta.store.sqlite.shutdown import ShutdownMarker

__all__ = [
    "Dispatch",
    "Job",
    "JobContext",
    "Pending",
    "Writer",
    "begin_immediate",
    "connect",
    "translate_error",
]

log = logging.getLogger("poczta.store")

BUSY_TIMEOUT_SECONDS = 30.0
# How long the writer sleeps while another process (a worker) holds the write lock: short
# steps, since a batch holds it for about one fsync. SQLite's own busy handler sleeps in
# steps growing to 100 ms, which leaves the database idle most of that time.
BUSY_RETRY_FIRST = 0.0002
BUSY_RETRY_MAX = 0.002


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL.

    A new database file is made private (SQLite gives its -wal and -shm the same mode)."""
    if not readonly:
        # O_EXCL: never open and close a descriptor of an existing database, since closing
        # one drops every POSIX lock this process holds on the file, SQLite's included.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
    return conn


def begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retried in short steps while another connection (another worker
    process) holds the write lock; `conn` should have a busy timeout of 0."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = BUSY_RETRY_FIRST
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, BUSY_RETRY_MAX)


def translate_error(exc: BaseException) -> BaseException:
    """Database and OS errors become `StoreUnavailable`; the store's own errors pass."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error | OSError):
        unavailable = StoreUnavailable(f"mail store failure: {exc}")
        unavailable.__cause__ = exc
        return unavailable
    return exc


@dataclass
class JobContext:
    """What a job asks of its batch: directories to sync first, actions after the commit.

    `placed` names the bodies this batch has just moved into place (known to exist).
    A job may run twice (see `Writer._run_jobs`): it must not act outside the database
    except idempotently (writing a blob, asking for an after-commit action).
    """

    blobs: BlobFiles
    placed: frozenset[str] = frozenset()
    sync_dirs: set[Path] = field(default_factory=set)
    after_commit: list[Callable[[], None]] = field(default_factory=list)


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: run the batch again with them."""


Job = Callable[[sqlite3.Connection, JobContext], Any]


@dataclass
class Pending:
    """A job waiting for its batch, and whom to answer (`reply`): for the writer thread a
    (loop, future) pair, for a `Writer` without a thread whatever its `dispatch` takes."""

    job: Job
    sync_dir: Path | None
    blob: StagedBlob | None  # made durable with the batch, before its rows
    reply: Any


_STOP = object()


@dataclass
class _Committed:
    """A batch whose transaction has ended, and what to do once that is durable."""

    batch: list[Pending]
    results: list[tuple[bool, Any]]
    after: list[Callable[[], None]]
    ok: bool = True  # False: the transaction as a whole failed and was rolled back


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


Dispatch = Callable[[list[Pending], list[tuple[bool, Any]]], None]


class Writer:
    """The writer thread and its queue of jobs.

    With a `dispatch` function there is no thread: the owner (the committer process,
    `poczta.store.sqlite.committer`) hands whole batches to `run_batch` and gets each job's
    outcome through `dispatch`.
    """

    def __init__(
        self,
        path: Path,
        blobs: BlobFiles,
        *,
        max_batch: int = 512,
        dispatch: Dispatch | None = None,
    ) -> None:
        self._conn = connect(path)
        self._conn.execute("PRAGMA busy_timeout = 0")  # begin_immediate waits for the lock
        self._turn_fd = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        self._blobs = blobs
        self._flush_after_commit = blobs.sync_method == "filesystem"
        if self._flush_after_commit:
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._marker = ShutdownMarker(path, self._conn)
        self._max_batch = max_batch
        # Unique across the processes sharing the database: a random start per writer.
        self._batch_tokens = itertools.count(secrets.randbits(62))
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._dispatch: Dispatch = dispatch or _dispatch_to_loops
        self._listed: int | None = None  # the last batch whose bodies are still listed unflushed
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.jobs = 0
        if dispatch is None:
            self._thread = threading.Thread(
                target=self._run, name="poczta-store-writer", daemon=True
            )
            self._thread.start()

    async def submit(
        self, job: Job, sync_dir: Path | None = None, blob: StagedBlob | None = None
    ) -> Any:
        """Run `job` in the next batch; return its result once the batch is committed.

        A staged `blob` is made durable with the batch's other bodies before any row.
        """
        if self._closed:
            if blob is not None:
                self._blobs.discard_staged([blob])
            raise StoreUnavailable("mail store is closed")
        if self._thread is None:
            raise RuntimeError("a Writer without a thread takes batches through run_batch")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(Pending(job, sync_dir, blob, (loop, future)))
        return await future

    def close(self) -> None:
        """Finish the queued jobs, stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        elif self._listed is not None:
            self._unlist(self._listed)
        self._conn.close()
        os.close(self._turn_fd)
        self._marker.close()

    def _take(self) -> tuple[list[Pending], bool]:
        """The jobs waiting (waiting for a first one), and whether to stop."""
        batch: list[Pending] = []
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get() if not batch else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if batch:
                self.run_batch(batch)
        if self._listed is not None:
            self._unlist(self._listed)

    def run_batch(self, batch: list[Pending]) -> None:
        """Run `batch` as one group commit and answer every job of it (any exception too)."""
        try:
            if self._flush_after_commit:
                self._listed = self._cycle(batch, self._listed)
            else:
                self._complete(self._commit_by_file(batch))
        except Exception as exc:  # never let the writer die with callers waiting
            log.exception("store writer failed")
            failure = StoreUnavailable(f"mail store failure: {exc}")
            self._dispatch(batch, [(False, failure)] * len(batch))

    def _cycle(self, batch: list[Pending], listed: int | None) -> int | None:
        """Place the bodies, commit the rows, flush once, answer; return the batch to unlist.

        The new bodies are listed in `unflushed_bodies` in the same transaction (see
        `poczta.store.sqlite.recovery`), and unlisted by the next one once the flush is
        done; `listed` is the previous batch's entries, flushed and now unlisted.
        """
        staged = [pending.blob for pending in batch if pending.blob is not None]
        if not staged:
            committed = self._transact(batch, frozenset(), unlist=listed, sync_log=True)
            self._complete(committed)
            return listed if not committed.ok else None
        placed = frozenset(item.digest for item in staged if item.temp is not None)
        try:
            self._blobs.place_staged(staged)
        except StoreUnavailable as exc:
            self._dispatch(batch, [(False, exc)] * len(batch))
            return listed
        token = next(self._batch_tokens)
        committed = self._transact(batch, placed, note=token, unlist=listed)
        if not committed.ok:
            self._complete(committed)  # every caller gets the failure
            return listed  # rolled back, the earlier entries included
        try:
            self._blobs.flush()
        except StoreUnavailable as exc:
            log.error("store flush failed: %s", exc)  # rows visible, bodies maybe not
            self._dispatch(batch, [(False, exc)] * len(batch))
            return None  # keep this batch listed: the next store to open checks it
        self._complete(committed)
        return token

    def _unlist(self, token: int) -> None:
        """Unlist a flushed batch's bodies in a transaction of their own (at the stop).

        If that fails, the next store to open checks those bodies instead.
        """
        self._transact([], frozenset(), unlist=token)

    def _commit_by_file(self, batch: list[Pending]) -> _Committed:
        """fsync the bodies, commit the rows with an fsync of the log (method "file")."""
        staged = [pending.blob for pending in batch if pending.blob is not None]
        try:
            placed = frozenset(item.digest for item in staged if item.temp is not None)
            self._blobs.commit_staged(staged)
        except StoreUnavailable as exc:
            return _Committed(batch, [(False, exc)] * len(batch), [])
        return self._transact(batch, placed)

    def _run_jobs(
        self, batch: list[Pending], placed: frozenset[str], *, savepoints: bool
    ) -> tuple[list[tuple[bool, Any]], list[Callable[[], None]], set[Path]]:
        """Run every job; with `savepoints` a failing job is undone alone, without them
        (one statement fewer per job, and jobs rarely fail) it raises `_JobFailed`."""
        conn = self._conn
        results: list[tuple[bool, Any]] = []
        after: list[Callable[[], None]] = []
        dirs: set[Path] = set()
        for pending in batch:
            ctx = JobContext(self._blobs, placed)
            if savepoints:
                conn.execute("SAVEPOINT job")
            try:
                value = pending.job(conn, ctx)
            except Exception as exc:
                if not savepoints:
                    raise _JobFailed() from exc
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                results.append((False, translate_error(exc)))
                continue
            if savepoints:
                conn.execute("RELEASE job")
            results.append((True, value))
            dirs |= ctx.sync_dirs
            if pending.sync_dir is not None:
                dirs.add(pending.sync_dir)
            after.extend(ctx.after_commit)
        return results, after, dirs

    def _transact(
        self,
        batch: list[Pending],
        placed: frozenset[str],
        *,
        note: int | None = None,
        unlist: int | None = None,
        sync_log: bool = False,
    ) -> _Committed:
        """Run the batch's jobs in one transaction, holding the turn between processes.

        With `note`, the bodies `placed` are listed as unflushed under that batch token;
        with `unlist`, an earlier (flushed) batch's entries are removed. With `sync_log`
        the COMMIT fsyncs the log (synchronous=FULL) even where the writer runs NORMAL.
        """
        results: list[tuple[bool, Any]] = []
        after: list[Callable[[], None]] = []
        conn = self._conn
        relax = sync_log and self._flush_after_commit
        if relax:
            conn.execute("PRAGMA synchronous = FULL")
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        try:
            begin_immediate(conn)
            try:
                results, after, dirs = self._run_jobs(batch, placed, savepoints=False)
            except _JobFailed:
                conn.execute("ROLLBACK")
                begin_immediate(conn)
                results, after, dirs = self._run_jobs(batch, placed, savepoints=True)
            if note is not None and placed:
                conn.executemany(
                    "INSERT INTO unflushed_bodies (batch, digest) VALUES (?, ?)",
                    [(note, digest) for digest in placed],
                )
            if unlist is not None:
                conn.execute("DELETE FROM unflushed_bodies WHERE batch = ?", (unlist,))
            self._blobs.sync_dirs(dirs)
            conn.execute("COMMIT")
            ok = True
        except Exception as exc:
            ok = False
            log.error("store batch of %d failed: %s", len(batch), exc)
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            failure = translate_error(exc)
            if not isinstance(failure, StoreUnavailable):
                failure = StoreUnavailable(f"mail store failure: {exc}")
            results = [(False, failure)] * len(batch)
            after = []
        finally:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)
            if relax:
                conn.execute("PRAGMA synchronous = NORMAL")
        self.batches += 1
        self.jobs += len(batch)
        return _Committed(batch, results, after, ok)

    def _complete(self, committed: _Committed) -> None:
        """The batch is durable: delete what it dropped, answer its callers."""
        for action in committed.after:
            try:
                action()
            except Exception as exc:  # leftovers are garbage, not damage
                log.warning("after-commit action failed: %s", exc)
        self._dispatch(committed.batch, committed.results)


def _dispatch_to_loops(batch: list[Pending], results: list[tuple[bool, Any]]) -> None:
    """Settle each caller's future on its own event loop, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for pending, (ok, value) in zip(batch, results, strict=True):
        loop, future = pending.reply
        by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, items in by_loop.items():
        # RuntimeError: the caller's loop is gone and nobody is waiting
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, items)
