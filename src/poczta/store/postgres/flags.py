"""A flag change (IMAP STORE) in the PostgreSQL store: two statements, no BEGIN or COMMIT.

What to write is decided by `flag_changes`, the one rule of both backends, from the
messages as a first statement reads them (`_READ`, no lock). The second (`_WRITE_IF`)
is the change itself, its own transaction: it locks the mailbox's row, then locks
those messages only where each still has the MODSEQ that was read, and when every one
does, takes the next MODSEQ, writes every changed message and notifies the change feed.
A message changed or expunged in between leaves that statement without effect (no
MODSEQ taken, nothing written); the change is then made in one transaction that
locks before it reads (`_locked_change`). So the usual STORE costs two round trips,
and one that changes nothing (+FLAGS of a flag the messages have) one.

A session hands the store the changes of the STOREs a client pipelined all at once, to
be made in command order (`poczta.imap.session.store_flags`); so this process makes the
changes of one mailbox one after another, in the order they were asked for
(`ChangeOrder`). Other processes' changes are ordered by the locks below.

Why the locking statements read the newest rows: under READ COMMITTED a statement
reads from the snapshot taken when it started, so a plain read that first waited for
the mailbox's lock would see the messages as they were before the writer it waited
for. The messages are therefore locked too (`FOR UPDATE`): a row another transaction
changed since the snapshot is then read in its newest version (and fails the MODSEQ
test), and one it deleted is left out. Every lock of a message waits for the mailbox's
row first (the message rows are joined to it), so the order of locks stays every
writer's: the mailbox, then its messages (see `mailboxes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from poczta.store.base import FlagMode, FlagResult, NotFound, normalize_flags
from poczta.store.flag_changes import flag_changes
from poczta.store.postgres.access import Connection, Database
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL

__all__ = ["ChangeOrder", "set_flags"]

_MESSAGES = (
    "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])"
)
_READ = (
    "SELECT b.highestmodseq, m.uid, m.flags, m.modseq FROM mailboxes b LEFT JOIN LATERAL"
    f" ({_MESSAGES}) m ON true WHERE b.id = $1 ORDER BY m.uid"
)
_LOCKED_READ = (
    "WITH box AS (SELECT highestmodseq FROM mailboxes WHERE id = $1 FOR UPDATE)"
    " SELECT box.highestmodseq, m.uid, m.flags, m.modseq FROM box LEFT JOIN LATERAL"
    f" ({_MESSAGES} FOR UPDATE) m ON true ORDER BY m.uid"
)
# $1 mailbox, $2 the changes as JSON [{uid, flags}]; with $3, $4 (the UIDs and MODSEQs
# read) the statement writes only if they are all still so, and returns NULL otherwise.
_TAKE_AND_WRITE = (
    " taken AS (UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1{guard}"
    f" RETURNING highestmodseq, pg_notify('{CHANGES_CHANNEL}', id::text)),"
    " written AS (UPDATE messages m SET flags = c.flags, modseq = taken.highestmodseq"
    " FROM taken, jsonb_to_recordset($2::jsonb) AS c(uid bigint, flags text[])"
    " WHERE m.mailbox_id = $1 AND m.uid = c.uid AND m.uid = ANY({uids}))"
    " SELECT (SELECT highestmodseq FROM taken)"
)
# The changed UIDs again, as an array: the planner takes the changes' JSON for 100 rows
# and would scan the whole mailbox for them; with the array it looks up each by its key.
_CHANGED_UIDS = "ARRAY(SELECT (e ->> 'uid')::bigint FROM jsonb_array_elements($2::jsonb) e)"
_WRITE_IF = (
    "WITH box AS (SELECT id FROM mailboxes WHERE id = $1 FOR UPDATE),"
    " unchanged AS (SELECT m.uid FROM box JOIN messages m ON m.mailbox_id = box.id"
    " JOIN unnest($3::bigint[], $4::bigint[]) AS r(uid, modseq)"
    " ON m.uid = r.uid AND m.modseq = r.modseq FOR UPDATE OF m),"
    + _TAKE_AND_WRITE.format(
        guard=" AND (SELECT count(*) FROM unchanged) = cardinality($3)", uids=_CHANGED_UIDS
    )
)
_WRITE = "WITH" + _TAKE_AND_WRITE.format(guard="", uids=_CHANGED_UIDS)

Rows = list[tuple[int, frozenset[str], int]]


class ChangeOrder:
    """Turns for the changes of each mailbox, in the order they were asked for."""

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def turn(self, mailbox_id: int) -> AsyncIterator[None]:
        lock = self._locks.setdefault(mailbox_id, asyncio.Lock())
        self._waiting[mailbox_id] = self._waiting.get(mailbox_id, 0) + 1
        try:
            async with lock:  # asyncio's locks are taken in the order they were asked for
                yield
        finally:
            self._waiting[mailbox_id] -= 1
            if not self._waiting[mailbox_id]:
                del self._waiting[mailbox_id], self._locks[mailbox_id]


def _rows(found: Sequence[Any], mailbox_id: int) -> tuple[int, Rows]:
    """(HIGHESTMODSEQ, the messages' (uid, flags, modseq)) of `_READ`'s answer."""
    if not found:
        raise NotFound(f"no mailbox {mailbox_id}")
    rows = [(int(r[1]), frozenset(r[2]), int(r[3])) for r in found if r[1] is not None]
    return int(found[0][0]), rows


def _written(updates: list[tuple[int, frozenset[str]]]) -> str:
    return json.dumps([{"uid": uid, "flags": sorted(new)} for uid, new in updates])


def _result(
    updates: list[tuple[int, frozenset[str]]], modified: list[int], modseq: int
) -> FlagResult:
    changed = tuple((uid, new, modseq) for uid, new in updates)
    return FlagResult(changed, tuple(modified), modseq)


async def set_flags(
    db: Database,
    mailbox_id: int,
    uids: Sequence[int],
    flags: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None,
) -> FlagResult:
    """Change the flags of `uids` by `mode` (see `MailStore.set_flags`)."""
    wanted = normalize_flags(flags)
    found = await db.statement(lambda c: c.fetch(_READ, mailbox_id, list(uids)))
    highest, rows = _rows(found, mailbox_id)
    modified, updates = flag_changes(rows, wanted, mode, unchangedsince)
    if not updates:
        return FlagResult((), tuple(modified), highest)
    read_uids, read_modseqs = [r[0] for r in rows], [r[2] for r in rows]
    modseq = await db.statement(
        lambda c: c.fetchval(_WRITE_IF, mailbox_id, _written(updates), read_uids, read_modseqs)
    )
    if modseq is not None:
        return _result(updates, modified, int(modseq))
    return await db.write(
        lambda c: _locked_change(c, mailbox_id, wanted, mode, uids, unchangedsince)
    )


async def _locked_change(
    conn: Connection,
    mailbox_id: int,
    wanted: frozenset[str],
    mode: FlagMode,
    uids: Sequence[int],
    unchangedsince: int | None,
) -> FlagResult:
    """The change in one transaction that locks the mailbox and its messages first."""
    highest, rows = _rows(await conn.fetch(_LOCKED_READ, mailbox_id, list(uids)), mailbox_id)
    modified, updates = flag_changes(rows, wanted, mode, unchangedsince)
    if not updates:
        return FlagResult((), tuple(modified), highest)
    modseq = int(await conn.fetchval(_WRITE, mailbox_id, _written(updates)))
    return _result(updates, modified, modseq)
