"""Mailboxes in the PostgreSQL store: their rows, names, UIDVALIDITY and the taking of UIDs.

UIDs and MODSEQs are taken by one `UPDATE mailboxes ... RETURNING` each (`bump`): the
row lock it takes makes every other transaction that takes from the same mailbox wait
for this one's COMMIT, so of concurrent deliveries on any number of connections and
nodes no two ever get the same UID or MODSEQ. The same statement notifies
`CHANGES_CHANNEL` of the change, delivered to the listeners when the transaction commits
(and not at all when it rolls back). A transaction that takes from several
mailboxes locks them in id order (`lock_in_order`), so two never wait for each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from poczta.store.base import (
    AlreadyExists,
    MailboxId,
    MailboxState,
    NotFound,
    StoreError,
    UserId,
)
from poczta.store.names import mailbox_name
from poczta.store.postgres.access import Connection
from poczta.store.postgres.bodies import release_blobs

__all__ = [
    "CHANGES_CHANNEL",
    "bump",
    "create_mailbox",
    "create_mailbox_row",
    "delete_mailbox",
    "get_mailbox",
    "list_mailboxes",
    "lock_in_order",
    "rename_mailbox",
    "require_mailbox",
]

#: The NOTIFY channel of changed mailboxes; the payload is the mailbox id.
CHANGES_CHANNEL = "poczta_mailbox_changed"

_MAILBOX_STATE = (
    "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, messages"
    " FROM mailboxes"
)


def _state(row: Any) -> MailboxState:
    return MailboxState(
        MailboxId(row[0]), UserId(row[1]), row[2], row[3], row[4], row[5], row[6], row[7]
    )


async def list_mailboxes(conn: Connection, user_id: int) -> list[MailboxState]:
    rows = await conn.fetch(f"{_MAILBOX_STATE} WHERE user_id = $1 ORDER BY name", user_id)
    return [_state(r) for r in rows]


async def get_mailbox(conn: Connection, user_id: int, name: str) -> MailboxState:
    name = mailbox_name(name)
    row = await conn.fetchrow(f"{_MAILBOX_STATE} WHERE user_id = $1 AND name = $2", user_id, name)
    if row is None:
        raise NotFound(f"no mailbox {name}")
    return _state(row)


async def require_mailbox(conn: Connection, mailbox_id: int, *, lock: bool = False) -> None:
    """NotFound unless the mailbox exists; with `lock`, its row is locked until COMMIT."""
    query = "SELECT 1 FROM mailboxes WHERE id = $1" + (" FOR UPDATE" if lock else "")
    if await conn.fetchval(query, mailbox_id) is None:
        raise NotFound(f"no mailbox {mailbox_id}")


async def create_mailbox_row(
    conn: Connection, user_id: int, name: str, special_use: str | None
) -> int:
    mailbox_id = await conn.fetchval(
        "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity)"
        " VALUES ($1, $2, $3, next_uidvalidity()) ON CONFLICT (user_id, name) DO NOTHING"
        " RETURNING id",
        user_id,
        name,
        special_use,
    )
    if mailbox_id is None:
        raise AlreadyExists(f"mailbox {name} exists")
    return int(mailbox_id)


async def _create_superiors(conn: Connection, user_id: int, name: str) -> None:
    """The missing superiors of `name` created, as CREATE and RENAME do (RFC 9051 6.3.4,
    6.3.6): "a" and "a/b" for "a/b/c"."""
    parts = name.split("/")
    for depth in range(1, len(parts)):
        await conn.execute(
            "INSERT INTO mailboxes (user_id, name, uidvalidity)"
            " VALUES ($1, $2, next_uidvalidity()) ON CONFLICT (user_id, name) DO NOTHING",
            user_id,
            "/".join(parts[:depth]),
        )


async def create_mailbox(
    conn: Connection, user_id: int, name: str, special_use: str | None
) -> MailboxState:
    name = mailbox_name(name)
    if await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR SHARE", user_id) is None:
        raise NotFound(f"no user {user_id}")
    await _create_superiors(conn, user_id, name)
    await create_mailbox_row(conn, user_id, name, special_use)
    return await get_mailbox(conn, user_id, name)


async def delete_mailbox(conn: Connection, user_id: int, name: str, now: float) -> None:
    name = mailbox_name(name)
    if name == "INBOX":
        raise StoreError("INBOX cannot be deleted")
    mailbox_id = await conn.fetchval(
        "SELECT id FROM mailboxes WHERE user_id = $1 AND name = $2 FOR UPDATE", user_id, name
    )
    if mailbox_id is None:
        raise NotFound(f"no mailbox {name}")
    rows = await conn.fetch(
        "SELECT digest, count(*) FROM messages WHERE mailbox_id = $1 GROUP BY digest", mailbox_id
    )
    await conn.execute("DELETE FROM mailboxes WHERE id = $1", mailbox_id)
    await conn.execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL, str(mailbox_id))
    await release_blobs(conn, [(r[0], r[1]) for r in rows], now)


async def rename_mailbox(conn: Connection, user_id: int, old: str, new: str) -> None:
    old, new = mailbox_name(old), mailbox_name(new)
    if old == "INBOX" or new == "INBOX":
        raise StoreError("renaming INBOX is not supported")
    # One rename of a user's mailboxes at a time (creations wait too, with FOR SHARE), so
    # that the checks below see what a rename on another connection or node just did:
    # two renames to one new name get AlreadyExists, never a violated unique key.
    if await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id) is None:
        raise NotFound(f"no user {user_id}")
    await get_mailbox(conn, user_id, old)
    clash = await conn.fetchval(
        "SELECT 1 FROM mailboxes WHERE user_id = $1 AND name = $2", user_id, new
    )
    if clash is not None:
        raise AlreadyExists(f"mailbox {new} exists")
    moved = "(name = $2 OR starts_with(name, $2 || '/'))"  # old and its inferiors
    # An inferior may land on a mailbox that stays: "A/x" on "B/x" left without its "B".
    taken = await conn.fetchval(
        "SELECT name FROM mailboxes WHERE user_id = $1 AND NOT" + moved + " AND name IN"
        " (SELECT $3 || substr(name, length($2) + 1) FROM mailboxes"
        "  WHERE user_id = $1 AND " + moved + ") LIMIT 1",
        user_id,
        old,
        new,
    )
    if taken is not None:
        raise AlreadyExists(f"mailbox {taken} exists")
    # In two steps: the unique key is checked row by row, and within one hierarchy (P/Q to
    # P, or P to P/Q) a new name may be the old name of a row not renamed yet. No valid
    # name starts with "/", so the names in between are free.
    await conn.execute(
        "UPDATE mailboxes SET name = '/' || name WHERE user_id = $1 AND " + moved, user_id, old
    )
    await conn.execute(
        "UPDATE mailboxes SET name = $3 || substr(name, length($2) + 2)"
        " WHERE user_id = $1 AND starts_with(name, '/')",
        user_id,
        old,
        new,
    )
    # After the move: renaming "a" to "a/b" takes "a" away, and then makes it anew.
    await _create_superiors(conn, user_id, new)


async def lock_in_order(conn: Connection, mailbox_ids: Iterable[int]) -> None:
    """Lock the rows of several mailboxes, in id order, before taking from them."""
    ids = sorted(set(mailbox_ids))
    if len(ids) > 1:
        await conn.execute(
            "SELECT 1 FROM mailboxes WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", ids
        )


async def bump(conn: Connection, mailbox_id: int, uids: int) -> tuple[int, int]:
    """Take `uids` new UIDs (maybe 0) and the next MODSEQ of a mailbox, locking its row
    until COMMIT: (the first UID taken, the MODSEQ). Its watchers, in every process, are
    notified on COMMIT."""
    row = await conn.fetchrow(
        "WITH taken AS (UPDATE mailboxes SET uidnext = uidnext + $2,"
        " highestmodseq = highestmodseq + 1 WHERE id = $1 RETURNING id, uidnext, highestmodseq)"
        f" SELECT uidnext - $2, highestmodseq, pg_notify('{CHANGES_CHANNEL}', id::text)"
        " FROM taken",
        mailbox_id,
        uids,
    )
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(row[0]), int(row[1])
