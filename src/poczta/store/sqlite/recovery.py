"""Recovery of the SQLite store after a crash: rows whose bodies did not reach the disk.

With the "filesystem" sync method (see `poczta.store.sqlite.writer`) a batch's new
bodies, their names and the rows referring to them are made durable by one flush after
the commit, and the writer lists the batch's new bodies in `unflushed_bodies` inside the
same transaction. A crash of the machine during that flush can leave rows on disk
whose body is missing, empty or partial. Nobody was answered for them: the flush did
not finish. Opening the store checks every listed body against its digest and removes
what refers to a bad one (message copies, queue entries, the blob row and the file),
so no mailbox shows a broken message; the sender's server sends it again.

A process killed with -9 loses nothing the kernel already had, so after such a crash
every listed body checks out and only the list is cleared. Running this while other
processes of the same server write is safe: their listed bodies are complete files,
and they are flushed before their entries are removed, so they are no less durable
than their writer's own flush would have made them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3

from poczta.store.sqlite.blobs import BlobFiles, blob_digest
from poczta.store.sqlite.writer import begin_immediate

__all__ = ["remove_rows_of_lost_bodies"]

log = logging.getLogger("poczta.store")


def _intact(blobs: BlobFiles, digest: str) -> bool:
    try:
        data = blobs.read(digest)
    except Exception:  # missing, unreadable or not a digest: not intact
        return False
    return blob_digest(data) == digest


def _make_durable(blobs: BlobFiles, digests: list[str]) -> None:
    if blobs.sync_method == "filesystem":
        blobs.flush()
        return
    for digest in digests:  # the method changed since the crash: fsync file by file
        fd = os.open(blobs.path(digest), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    blobs.sync_dirs({blobs.path(digest).parent for digest in digests})


def remove_rows_of_lost_bodies(conn: sqlite3.Connection, blobs: BlobFiles) -> list[str]:
    """Check the bodies listed as unflushed; drop rows of lost ones. Returns their digests."""
    entries = conn.execute("SELECT DISTINCT batch, digest FROM unflushed_bodies").fetchall()
    if not entries:
        return []
    listed = sorted({digest for _, digest in entries})
    lost = [digest for digest in listed if not _intact(blobs, digest)]
    _make_durable(blobs, [digest for digest in listed if digest not in lost])
    begin_immediate(conn)
    try:
        for digest in lost:
            conn.execute("DELETE FROM messages WHERE digest = ?", (digest,))
            conn.execute("DELETE FROM queue WHERE digest = ?", (digest,))
            conn.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        conn.executemany("DELETE FROM unflushed_bodies WHERE batch = ? AND digest = ?", entries)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    for digest in lost:
        log.warning("removed the messages of body %s: it was not on disk after a crash", digest)
        with contextlib.suppress(Exception):
            os.unlink(blobs.path(digest))
    return lost
