"""The cached MIME structure of messages stored before schema version 6, computed from
their bodies when the store opens.

Chosen over a lazy parse on first read: FETCH runs on read-only connections, so a
lazy parse would need a write-back through the writer from the read path, and the
first FETCH of a big mailbox would pay for every message. Here the store, before it
serves, parses each body that still has rows without a structure once and writes the
structure to all of those rows, a batch of bodies per transaction. That costs one
parse per distinct body, once, at the first start after the upgrade; afterwards the
query finds nothing. A body that cannot be read leaves its rows without a structure
(`MessageMeta.structure` is None) and is tried again at the next open.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3

from poczta.message import parse_structure
from poczta.store.codec import encode_structure
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.writer import begin_immediate

__all__ = ["backfill_structures"]

log = logging.getLogger("poczta.store")

BATCH = 200  # bodies per transaction: short write locks while other processes deliver


def backfill_structures(conn: sqlite3.Connection, blobs: BlobFiles) -> int:
    """Give every message row without a structure the one parsed from its body; return
    the number of bodies parsed."""
    digests = [
        str(row[0])
        for row in conn.execute("SELECT DISTINCT digest FROM messages WHERE structure IS NULL")
    ]
    parsed = 0
    for first in range(0, len(digests), BATCH):
        updates: list[tuple[str | None, str]] = []
        for digest in digests[first : first + BATCH]:
            try:
                data = blobs.read(digest)
            except Exception:  # missing or unreadable: keep the row, try again next time
                log.warning("no MIME structure for body %s: it cannot be read", digest)
                continue
            updates.append((encode_structure(parse_structure(data)), digest))
        if not updates:
            continue
        begin_immediate(conn)
        try:
            conn.executemany(
                "UPDATE messages SET structure = ? WHERE digest = ? AND structure IS NULL",
                updates,
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        parsed += len(updates)
    if parsed:
        log.info("computed the MIME structure of %d stored bodies", parsed)
    return parsed
