"""A flag change (IMAP STORE) in the PostgreSQL store: one transaction of two statements.

The first statement locks the mailbox's row and then, in the same statement, reads and
locks the messages to change (`_LOCKED_READ`); the second takes the next MODSEQ, writes
every changed message and notifies the change feed (`_WRITE`). With BEGIN and COMMIT that
is four round trips whatever the number of messages.

Why one statement may lock and read: under READ COMMITTED a statement reads from the
snapshot taken when it started, so a plain read that first waited for the mailbox's lock
would see the messages as they were before the writer it waited for. The messages are
therefore locked too (`FOR UPDATE` in the lateral subquery): a row another transaction
changed since the snapshot is then read in its newest version, and one it deleted is
skipped. The mailbox's row is scanned first (the outer side of the lateral join), so the
order of locks stays every writer's: the mailbox, then its messages (see `mailboxes`).
What to write is decided by `flag_changes`, the one rule of both backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from poczta.store.base import FlagMode, FlagResult, NotFound, normalize_flags
from poczta.store.flag_changes import flag_changes
from poczta.store.postgres.access import Connection
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL

__all__ = ["set_flags"]

_LOCKED_READ = (
    "WITH box AS (SELECT highestmodseq FROM mailboxes WHERE id = $1 FOR UPDATE)"
    " SELECT box.highestmodseq, m.uid, m.flags, m.modseq FROM box LEFT JOIN LATERAL"
    " (SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1"
    " AND uid = ANY($2::bigint[]) FOR UPDATE) m ON true ORDER BY m.uid"
)
_WRITE = (
    "WITH taken AS (UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1"
    f" RETURNING highestmodseq, pg_notify('{CHANGES_CHANNEL}', id::text)),"
    " written AS (UPDATE messages m SET flags = c.flags, modseq = taken.highestmodseq"
    " FROM taken, jsonb_to_recordset($2::jsonb) AS c(uid bigint, flags text[])"
    " WHERE m.mailbox_id = $1 AND m.uid = c.uid)"
    " SELECT highestmodseq FROM taken"
)


async def set_flags(
    conn: Connection,
    mailbox_id: int,
    uids: Sequence[int],
    flags: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None,
) -> FlagResult:
    """Change the flags of `uids` by `mode` (see `MailStore.set_flags`), in the caller's
    transaction."""
    wanted = normalize_flags(flags)
    rows = await conn.fetch(_LOCKED_READ, mailbox_id, list(uids))
    if not rows:
        raise NotFound(f"no mailbox {mailbox_id}")
    highest = int(rows[0][0])
    current = ((int(r[1]), frozenset(r[2]), int(r[3])) for r in rows if r[1] is not None)
    modified, updates = flag_changes(current, wanted, mode, unchangedsince)
    if not updates:
        return FlagResult((), tuple(modified), highest)
    written = json.dumps([{"uid": uid, "flags": sorted(new)} for uid, new in updates])
    modseq = int(await conn.fetchval(_WRITE, mailbox_id, written))
    changed = tuple((uid, new, modseq) for uid, new in updates)
    return FlagResult(changed, tuple(modified), modseq)
