"""IMAP's reads and writes in the PostgreSQL store beyond plain messages: mailbox versions
and counts, CONDSTORE's changes, VANISHED, the messages' facts for FETCH, COPY and MOVE,
\\Recent, subscriptions.

Async functions on a connection inside the caller's transaction. A COPY or MOVE locks
its two mailboxes in id order before taking UIDs (see `mailboxes`); a copy counts one
more reference to each body; a move changes its rows' places and keeps the references
they had.

The reads every IMAP command makes (the mailbox's version, what changed and what was
expunged since a MODSEQ, the messages' facts, the \\Recent mark) are one statement each,
so that the store can run them without a transaction around them (`Database.statement`):
one round trip each. Where a read must also say that the mailbox is gone, the mailbox's
row is the outer side of a lateral join: no row at all is NotFound, one row of NULLs is
a mailbox with nothing to say. `claim_recent` is one statement too, a write of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from poczta.store.base import MailboxChange, MailboxId, MessageMeta, NewsAndFacts, NotFound
from poczta.store.codec import decode_flags
from poczta.store.names import mailbox_name
from poczta.store.postgres.access import Connection, equals_any
from poczta.store.postgres.bodies import CHUNK, add_blob_ref
from poczta.store.postgres.mailboxes import bump, get_mailbox, lock_in_order
from poczta.store.postgres.messages import (
    _META_COLUMNS,
    FLAGS_TEXT,
    KEPT_COLUMNS,
    kept_meta_of,
    meta_of,
)

__all__ = [
    "changed_since",
    "claim_recent",
    "copy_messages",
    "deleted_storage",
    "fetch_meta",
    "fetch_meta_with_bodies",
    "mailbox_changes",
    "mailbox_counts",
    "mailbox_version",
    "move_message",
    "news_and_facts",
    "news_since",
    "recent_mark",
    "subscribe",
    "subscriptions",
    "unsubscribe",
    "vanished",
]

#: UIDs asked whose range is under this many times their count are read as a range.
DENSE_SPAN = 2


def among_uids(uids: Sequence[int], param: int) -> tuple[str, list[object]]:
    """The condition that a message's UID is one of `uids` (parameters from `$param`
    on) and its arguments. UIDs that lie close together (a slice of a mailbox, as a
    first-open FETCH or a MOVE of many asks) are also bounded by their lowest and highest,
    so that the index is read once over that range with the set as a filter, instead of
    once from its root for each UID."""
    where, argument = equals_any("uid", uids, param, "bigint")
    if len(uids) > 1:
        low, high = min(uids), max(uids)
        if high - low < DENSE_SPAN * len(uids):
            bounds = f"uid BETWEEN ${param + 1} AND ${param + 2}"
            return f"{bounds} AND {where}", [argument, low, high]
    return where, [argument]


# Every column of a message but its place (mailbox, uid, modseq): what a copy keeps.
_COPIED = (
    "flags, internal_date, internal_date_zone, digest, size, header_size, sent_date,"
    " sent_date_zone, subject, message_id, envelope, headers, structure, imap_envelope,"
    " imap_bodystructure"
)


async def mailbox_changes(conn: Connection, ids: Collection[int]) -> dict[MailboxId, MailboxChange]:
    """The current state of each mailbox of `ids` that still exists."""
    chosen, argument = equals_any("id", list(ids), 1, "bigint")
    rows = await conn.fetch(
        f"SELECT id, highestmodseq, uidnext, messages FROM mailboxes WHERE {chosen}", argument
    )
    return {MailboxId(r[0]): MailboxChange(MailboxId(r[0]), r[1], r[2], r[3]) for r in rows}


async def mailbox_version(conn: Connection, mailbox_id: int) -> MailboxChange:
    found = await mailbox_changes(conn, [mailbox_id])
    if not found:
        raise NotFound(f"no mailbox {mailbox_id}")
    return found[MailboxId(mailbox_id)]


async def changed_since(
    conn: Connection, mailbox_id: int, modseq: int
) -> list[tuple[int, frozenset[str], int]]:
    """(uid, flags, modseq) of the messages changed after `modseq`, in UID order.

    Answered from the index `messages_modseq` alone (it holds uid and flags); the flags
    come as the codec's text, one decoded set per distinct text (a mailbox has few)."""
    rows = await conn.fetch(
        f"SELECT uid, {FLAGS_TEXT}, modseq FROM messages WHERE mailbox_id = $1 AND modseq > $2"
        " ORDER BY uid",
        mailbox_id,
        modseq,
    )
    return [(uid, decode_flags(text), changed) for uid, text, changed in rows]


async def news_since(
    conn: Connection, mailbox_id: int, modseq: int
) -> tuple[MailboxChange, list[tuple[int, frozenset[str], int]]]:
    """The mailbox's version and, when it moved past `modseq`, the changes since: one
    statement (the messages are not looked at when HIGHESTMODSEQ did not move)."""
    rows = await conn.fetch(_NEWS, mailbox_id, modseq)
    if not rows:
        raise NotFound(f"no mailbox {mailbox_id}")
    first = rows[0]
    version = MailboxChange(MailboxId(mailbox_id), first[0], first[1], first[2])
    return version, [(int(r[3]), frozenset(r[4]), int(r[5])) for r in rows if r[3] is not None]


# No message's MODSEQ is above its mailbox's HIGHESTMODSEQ: saying so changes nothing
# found, but it bounds the range on both sides, and the server's estimate of the generic
# plan drops below that of planning anew. Without it every execution of this statement,
# the one every IMAP command makes, was planned afresh at five times its own cost.
_MOVED_SINCE = "modseq > $2 AND modseq <= b.highestmodseq AND b.highestmodseq > $2"
_NEWS = (
    "SELECT b.highestmodseq, b.uidnext, b.messages, m.uid, m.flags, m.modseq"
    " FROM mailboxes b LEFT JOIN LATERAL (SELECT uid, flags, modseq FROM messages"
    f" WHERE mailbox_id = b.id AND {_MOVED_SINCE}) m ON true WHERE b.id = $1 ORDER BY m.uid"
)


async def vanished(conn: Connection, mailbox_id: int, since_modseq: int) -> list[int]:
    """The UIDs expunged after `since_modseq`, in UID order (NotFound: no such mailbox)."""
    rows = await conn.fetch(
        "SELECT e.uid FROM mailboxes b LEFT JOIN LATERAL (SELECT uid FROM expunged"
        " WHERE mailbox_id = b.id AND modseq > $2) e ON true WHERE b.id = $1 ORDER BY e.uid",
        mailbox_id,
        since_modseq,
    )
    if not rows:
        raise NotFound(f"no mailbox {mailbox_id}")
    return [int(r[0]) for r in rows if r[0] is not None]


def _read_columns(kept_only: bool) -> tuple[str, Callable[[Any], MessageMeta]]:
    """The columns a facts read selects and how a row of them becomes a `MessageMeta`."""
    return (KEPT_COLUMNS, kept_meta_of) if kept_only else (_META_COLUMNS, meta_of)


async def fetch_meta(
    conn: Connection, mailbox_id: int, uids: Sequence[int] | None, kept_only: bool = False
) -> list[MessageMeta]:
    """The facts of the mailbox's messages of `uids` (all when None), in UID order;
    with `kept_only` without the envelope, headers and structure (`KEPT_COLUMNS`)."""
    chosen, arguments = "", list[object]()  # all of them
    if uids is not None:
        where, arguments = among_uids(uids, 2)
        chosen = f" AND {where}"
    columns, make = _read_columns(kept_only)
    rows = await conn.fetch(
        f"SELECT m.* FROM mailboxes b LEFT JOIN LATERAL (SELECT {columns} FROM messages"
        f" WHERE mailbox_id = b.id{chosen}) m ON true WHERE b.id = $1 ORDER BY m.uid",
        mailbox_id,
        *arguments,
    )
    if not rows:
        raise NotFound(f"no mailbox {mailbox_id}")
    return [make(r) for r in rows if r[0] is not None]


#: At most this many messages come with their small bodies in one statement.
FEW_WITH_BODIES = 16
# A message's body, when it is one chunk: its row (o) and that chunk (c), NULL otherwise.
_ONE_CHUNK = (
    f" LEFT JOIN blobs o ON o.digest = m.digest AND o.size <= {CHUNK}"
    " LEFT JOIN blob_chunks c ON c.blob_id = o.id AND c.seq = 0"
)


async def fetch_meta_with_bodies(
    conn: Connection, mailbox_id: int, uids: Sequence[int], kept_only: bool = False
) -> tuple[list[MessageMeta], dict[str, bytes]]:
    """The facts of the mailbox's messages of `uids` (as `fetch_meta`) and, read in the
    same statement, the bytes of each body that is one chunk (by digest; the others,
    and an empty one, which has no chunk, are for the caller to read apart). One chunk
    each keeps the plan to three index lookups a message, the same for every call: one
    that gathered the chunks of bigger bodies was planned anew each time, which cost
    more than running it."""
    where, arguments = among_uids(uids, 2)
    columns, make = _read_columns(kept_only)
    rows = await conn.fetch(
        f"SELECT m.*, o.size, c.data FROM mailboxes b LEFT JOIN LATERAL (SELECT {columns}"
        f" FROM messages WHERE mailbox_id = b.id AND {where}) m ON true{_ONE_CHUNK}"
        " WHERE b.id = $1 ORDER BY m.uid",
        mailbox_id,
        *arguments,
    )
    if not rows:
        raise NotFound(f"no mailbox {mailbox_id}")
    return _with_bodies([row for row in rows if row[0] is not None], make)


def _with_bodies(
    rows: Sequence[Any], make: Callable[[Any], MessageMeta]
) -> tuple[list[MessageMeta], dict[str, bytes]]:
    """The facts of rows of a message's columns, its body's size and its one chunk (NULL
    when the body is not one chunk), and the bodies whole that way, by digest."""
    metas: list[MessageMeta] = []
    bodies: dict[str, bytes] = {}
    for row in rows:
        meta = make(row[:-2])
        metas.append(meta)
        size, data = row[-2], row[-1]
        if data is not None and len(data) == size:
            bodies[meta.digest] = data
    return metas, bodies


async def news_and_facts(
    conn: Connection, mailbox_id: int, modseq: int, uids: Sequence[int], kept_only: bool
) -> NewsAndFacts:
    """`news_since` and `fetch_meta_with_bodies` in one statement, so of one snapshot:
    the mailbox's row, with the changes and the facts (and one-chunk bodies) as arrays
    of rows, each read once whatever the other holds."""
    where, arguments = among_uids(uids, 3)
    columns, make = _read_columns(kept_only)
    row = await conn.fetchrow(
        "SELECT b.highestmodseq, b.uidnext, b.messages,"
        f" (SELECT array_agg(ROW(uid, {FLAGS_TEXT}, modseq) ORDER BY uid) FROM messages"
        f" WHERE mailbox_id = b.id AND {_MOVED_SINCE}),"
        " (SELECT array_agg(ROW(m.*, o.size, c.data) ORDER BY m.uid)"
        f" FROM (SELECT {columns} FROM messages WHERE mailbox_id = b.id AND {where}) m"
        f"{_ONE_CHUNK})"
        " FROM mailboxes b WHERE b.id = $1",
        mailbox_id,
        modseq,
        *arguments,
    )
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    version = MailboxChange(MailboxId(mailbox_id), row[0], row[1], row[2])
    changes = [(uid, decode_flags(text), moved) for uid, text, moved in row[3] or ()]
    metas, bodies = _with_bodies(row[4] or (), make)
    return NewsAndFacts(version, changes, metas, bodies)


async def mailbox_counts(conn: Connection, mailbox_id: int) -> tuple[int, int, int, int]:
    """(messages, unseen, deleted, size in octets) of a mailbox."""
    row = await conn.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE NOT '\\Seen' = ANY(flags)),"
        " count(*) FILTER (WHERE '\\Deleted' = ANY(flags)), coalesce(sum(size), 0)"
        " FROM messages WHERE mailbox_id = $1",
        mailbox_id,
    )
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def deleted_storage(conn: Connection, mailbox_id: int) -> int:
    total = await conn.fetchval(
        "SELECT coalesce(sum(size), 0) FROM messages"
        " WHERE mailbox_id = $1 AND '\\Deleted' = ANY(flags)",
        mailbox_id,
    )
    return int(total)


async def _copy_rows(
    conn: Connection, source: int, target: int, pairs: Sequence[tuple[int, int]], modseq: int
) -> None:
    await conn.execute(
        f"INSERT INTO messages (mailbox_id, uid, modseq, {_COPIED})"
        f" SELECT $1, p.new, $3, {_COPIED} FROM unnest($4::bigint[], $5::bigint[]) AS p(old, new)"
        " JOIN messages m ON m.mailbox_id = $2 AND m.uid = p.old",
        target,
        source,
        modseq,
        [old for old, _ in pairs],
        [new for _, new in pairs],
    )


async def _move_rows(
    conn: Connection, source: int, target: int, pairs: Sequence[tuple[int, int]], modseq: int
) -> None:
    """The rows of a MOVE change places, and the source side goes as an expunge with a
    MODSEQ of its own (kept for VANISHED). The two mailboxes' counts change here, in the
    statement that tells the per-row triggers so (see migration 6); the user's usage
    does not change."""
    _, gone = await bump(conn, source, 0)
    await conn.execute(
        "WITH counted AS (UPDATE mailboxes SET messages = messages"
        " + CASE WHEN $1 = $2 THEN 0 WHEN id = $2 THEN $3::bigint ELSE -$3::bigint END"
        " WHERE id IN ($1, $2))"
        " SELECT set_config('poczta.counted_move', 'on', true)",
        source,
        target,
        len(pairs),
    )
    await conn.execute(
        "WITH moved AS (UPDATE messages m SET mailbox_id = $2, uid = p.new, modseq = $3"
        " FROM unnest($4::bigint[], $5::bigint[]) AS p(old, new)"
        " WHERE m.mailbox_id = $1 AND m.uid = p.old RETURNING p.old)"
        " INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, old, $6 FROM moved"
        " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
        source,
        target,
        modseq,
        [old for old, _ in pairs],
        [new for _, new in pairs],
        gone,
    )


async def copy_messages(
    conn: Connection, user_id: int, source: int, uids: Sequence[int], target: str, move: bool
) -> tuple[int, list[tuple[int, int]]]:
    """COPY or MOVE `uids` of mailbox `source` to the user's mailbox `target`: (target's
    UIDVALIDITY, [(source uid, new uid)] in UID order), messages already gone skipped.
    NotFound when the target does not exist (TRYCREATE) or the source is not the user's."""
    name = mailbox_name(target)
    row = await conn.fetchrow(  # the target, if the source is the user's too
        "SELECT t.id, t.uidvalidity FROM mailboxes t JOIN mailboxes s ON s.id = $3"
        " AND s.user_id = t.user_id WHERE t.user_id = $1 AND t.name = $2",
        user_id,
        name,
        source,
    )
    if row is None:
        raise NotFound(f"no mailbox {name}")
    target_id, uidvalidity = int(row[0]), int(row[1])
    await lock_in_order(conn, [source, target_id])
    columns = "uid" if move else "uid, digest, size"  # a MOVE's from the index alone
    among, arguments = among_uids(uids, 2)
    found = await conn.fetch(
        f"SELECT {columns} FROM messages WHERE mailbox_id = $1 AND {among} ORDER BY uid",
        source,
        *arguments,
    )
    if not found:
        return uidvalidity, []
    first, modseq = await bump(conn, target_id, len(found))
    pairs = [(int(r[0]), first + i) for i, r in enumerate(found)]
    if move:
        await _move_rows(conn, source, target_id, pairs, modseq)
        return uidvalidity, pairs
    counts: dict[str, tuple[int, int]] = {}  # the body rows first: the copies' keys need them
    for _, digest, size in found:
        count, _ = counts.get(digest, (0, size))
        counts[digest] = (count + 1, size)
    for digest, (count, size) in sorted(counts.items()):
        await add_blob_ref(conn, digest, size, None, count)
    await _copy_rows(conn, source, target_id, pairs, modseq)
    return uidvalidity, pairs


async def move_message(conn: Connection, user_id: int, source: str, uid: int, target: str) -> int:
    """Move message `uid` of mailbox `source` to `target`; return its new UID."""
    from_box = await get_mailbox(conn, user_id, source)
    to_box = await get_mailbox(conn, user_id, target)
    await lock_in_order(conn, [from_box.id, to_box.id])
    found = await conn.fetchval(
        "SELECT 1 FROM messages WHERE mailbox_id = $1 AND uid = $2", from_box.id, uid
    )
    if found is None:
        raise NotFound(f"no message {uid} in {from_box.name}")
    new_uid, modseq = await bump(conn, to_box.id, 1)
    await _move_rows(conn, from_box.id, to_box.id, [(uid, new_uid)], modseq)
    return new_uid


async def claim_recent(conn: Connection, mailbox_id: int, up_to: int | None) -> int:
    """Take the \\Recent messages of a mailbox for one session: the first UID recent for
    it; the mailbox's mark moves to `up_to` (UIDNEXT when None; never backwards).

    One statement: the locking read gives the row as the last claim committed it (a
    claim waiting for another reads that one's mark), and the update moves the mark."""
    first = await conn.fetchval(
        "WITH old AS (SELECT recent_uid, coalesce($2::bigint, uidnext) AS mark"
        " FROM mailboxes WHERE id = $1 FOR UPDATE),"
        " moved AS (UPDATE mailboxes b SET recent_uid = old.mark FROM old"
        " WHERE b.id = $1 AND old.mark > old.recent_uid)"
        " SELECT recent_uid FROM old",
        mailbox_id,
        up_to,
    )
    if first is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(first)


async def recent_mark(conn: Connection, mailbox_id: int) -> int:
    mark = await conn.fetchval("SELECT recent_uid FROM mailboxes WHERE id = $1", mailbox_id)
    if mark is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(mark)


async def subscriptions(conn: Connection, user_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT name FROM subscriptions WHERE user_id = $1 ORDER BY name", user_id
    )
    return [str(r[0]) for r in rows]


async def subscribe(conn: Connection, user_id: int, name: str) -> None:
    await conn.execute(
        "INSERT INTO subscriptions (user_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user_id,
        mailbox_name(name),
    )


async def unsubscribe(conn: Connection, user_id: int, name: str) -> bool:
    status = await conn.execute(
        "DELETE FROM subscriptions WHERE user_id = $1 AND name = $2", user_id, mailbox_name(name)
    )
    return bool(status != "DELETE 0")
