"""FETCH text for message rows that lack it, made from their cached envelope and structure.

A row gets its ENVELOPE and BODYSTRUCTURE wire text when it is stored; rows written
without it (a copy from another store, which carries only the parse) get it here, in
batches of their own transactions, without reading a body.
"""

from __future__ import annotations

from poczta.message.fetch_text import bodystructure_text, envelope_text
from poczta.store.codec import decode_envelope, decode_structure
from poczta.store.postgres.access import Connection

__all__ = ["backfill_fetch_text"]

BATCH = 1000


async def backfill_fetch_text(conn: Connection) -> int:
    """Give every message row without FETCH text its text; return how many were done."""
    done = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT mailbox_id, uid, envelope, structure FROM messages"
                " WHERE imap_envelope IS NULL ORDER BY mailbox_id, uid LIMIT $1 FOR UPDATE",
                BATCH,
            )
            if not rows:
                return done
            await conn.executemany(
                "UPDATE messages SET imap_envelope = $1, imap_bodystructure = $2"
                " WHERE mailbox_id = $3 AND uid = $4",
                [
                    (
                        envelope_text(decode_envelope(row["envelope"])),
                        bodystructure_text(decode_structure(row["structure"])),
                        row["mailbox_id"],
                        row["uid"],
                    )
                    for row in rows
                ],
            )
        done += len(rows)
