"""Blob references in the SQLite store: counting them, releasing bodies and sweeping them.

Each stored body has a row in `blobs` counting the messages and queue entries that use
it. When the count reaches zero the body is *released*, not deleted: the row keeps the
time (`released`) and the file stays. A sweep (`sweep_job`) deletes the rows released
longer ago than a grace period, and their files, inside its transaction.

Deleting at once is what lost mail: a delivery stages its body on the event loop and
finds the file already there (identical content is stored once), so it sends no bytes of
its own; if the last copy was expunged in the same batch, or by another process, before
the delivery's rows were written, the file was unlinked after that commit and the new
message pointed at nothing. Now a reference taken within the grace period revives the
row, and its file is still there; a body swept anyway (a delivery slower than the grace
period) is noticed by `add_blob_ref`, which writes it again from the bytes the delivery
carries in that case, or fails with `NotFound` (a temporary error for the client), never
with a row and no file. The sweep also leaves any file written within the grace period
alone, which covers a body placed by another process just before its rows are written.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from poczta.store.base import NotFound
from poczta.store.sqlite.writer import Job, JobContext

__all__ = ["DEFAULT_GRACE", "add_blob_ref", "releasable", "release_blobs", "sweep_job"]

DEFAULT_GRACE = 15 * 60.0  # seconds a released body stays, longer than any delivery takes
SWEEP_BATCH = 1000  # rows per sweep transaction, so that one never holds the lock long


def add_blob_ref(
    conn: sqlite3.Connection,
    ctx: JobContext,
    digest: str,
    size: int,
    data: bytes | None,
    count: int,
) -> None:
    """Count `count` more references to a blob; (re)write its file if no row had any."""
    (refs,) = conn.execute(
        "INSERT INTO blobs (digest, size, refs) VALUES (?, ?, ?)"
        " ON CONFLICT (digest) DO UPDATE SET refs = refs + excluded.refs, released = NULL"
        " RETURNING refs",
        (digest, size, count),
    ).fetchone()
    if refs != count or digest in ctx.placed:
        return
    # A new or released row: a sweep may have deleted the file. Sweeps take the write
    # lock this job holds, so checking now is race-free.
    if not ctx.blobs.exists(digest):
        if data is None:
            raise NotFound(f"no blob {digest}")
        _, directory = ctx.blobs.put(data, sync_dir=False)
        ctx.sync_dirs.add(directory)


def release_blobs(
    conn: sqlite3.Connection, ctx: JobContext, digests: Sequence[tuple[str, int]]
) -> None:
    """Drop `count` references of each digest; a body left with none is released."""
    now = time.time()
    conn.executemany(
        "UPDATE blobs SET refs = max(refs - ?1, 0),"
        " released = CASE WHEN refs - ?1 <= 0 THEN ?2 ELSE NULL END WHERE digest = ?3",
        [(count, now, digest) for digest, count in digests],
    )


def releasable(conn: sqlite3.Connection, cutoff: float) -> bool:
    """Whether any body was released before `cutoff` (a cheap read before a sweep)."""
    row = conn.execute(
        "SELECT 1 FROM blobs WHERE released IS NOT NULL AND released < ? LIMIT 1", (cutoff,)
    ).fetchone()
    return row is not None


def sweep_job(cutoff: float, limit: int = SWEEP_BATCH) -> Job:
    """Delete up to `limit` bodies released before `cutoff`; return how many went.

    Files are unlinked inside the transaction: should it roll back, the rows stay
    released with their files gone, which `add_blob_ref` handles like any swept body.
    """

    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        rows = conn.execute(
            "SELECT digest FROM blobs WHERE released IS NOT NULL AND released < ? LIMIT ?",
            (cutoff, limit),
        ).fetchall()
        gone = [
            digest
            for (digest,) in rows
            if digest not in ctx.placed and ctx.blobs.delete_unless_newer(digest, cutoff)
        ]
        conn.executemany("DELETE FROM blobs WHERE digest = ?", [(d,) for d in gone])
        return len(gone)

    return job
