"""The cached parse of messages stored before it was kept whole, completed when the store
opens: the MIME structure (schema version 6), computed from the bodies, and the FETCH
wire text (version 13), made from the cached envelope and structure.

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
from collections.abc import Sequence

from poczta.message import parse_structure
from poczta.message.fetch_text import bodystructure_text, envelope_text
from poczta.store.codec import decode_envelope, decode_structure, encode_structure
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.writer import begin_immediate

__all__ = ["backfill_fetch_text", "backfill_structures"]

log = logging.getLogger("poczta.store")

BATCH = 200  # bodies per transaction: short write locks while other processes deliver
REMEMBERED = 4096  # bodies whose FETCH text the backfill keeps for rows still to come


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
        _update(
            conn,
            "UPDATE messages SET structure = ? WHERE digest = ? AND structure IS NULL",
            updates,
        )
        parsed += len(updates)
    if parsed:
        log.info("computed the MIME structure of %d stored bodies", parsed)
    return parsed


def backfill_fetch_text(conn: sqlite3.Connection) -> int:
    """Give every message row without FETCH wire text the text made from its cached
    envelope and structure; return the number of rows done. No body is read.

    The rows are walked in key order (each batch starts after the last key of the one
    before); the text of a body several rows share is made once while it is remembered.
    """
    done, after = 0, (0, 0)
    texts: dict[str, tuple[str, str | None]] = {}
    while True:
        rows = conn.execute(
            "SELECT mailbox_id, uid, digest, envelope, structure FROM messages"
            " WHERE (mailbox_id, uid) > (?, ?) AND imap_envelope IS NULL"
            " ORDER BY mailbox_id, uid LIMIT ?",
            (*after, BATCH),
        ).fetchall()
        if not rows:
            break
        if len(texts) > REMEMBERED:
            texts.clear()
        updates = []
        for mailbox_id, uid, digest, envelope, structure in rows:
            if digest not in texts:
                root = decode_structure(structure)
                texts[digest] = (envelope_text(decode_envelope(envelope)), bodystructure_text(root))
            updates.append((*texts[digest], mailbox_id, uid))
        _update(
            conn,
            "UPDATE messages SET imap_envelope = ?, imap_bodystructure = ?"
            " WHERE mailbox_id = ? AND uid = ?",
            updates,
        )
        done += len(updates)
        after = (rows[-1][0], rows[-1][1])
    if done:
        log.info("made the FETCH text of %d stored messages", done)
    return done


def _update(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """One batch of updates in a transaction of its own."""
    begin_immediate(conn)
    try:
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
