"""Messages in the PostgreSQL store: delivery, the cached parse, flags, expunge, VANISHED.

Async functions on a connection inside the caller's transaction. Every change to a
mailbox's messages takes the next MODSEQ of that mailbox (`mailboxes.bump`): a delivery
one per message, a flag change one per call, an expunge one per call (kept with the
expunged UIDs for VANISHED). A delivery locks its mailboxes first, then its body's row
(`bodies.add_blob_ref`), the order every other writer follows.

Times keep their offset: a timestamptz column holds the instant and a smallint beside it
the offset in minutes east of UTC, put back on reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from poczta.imap.fetch_cache import bodystructure_text, envelope_text
from poczta.message import ParsedMessage
from poczta.store.base import (
    Accepted,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    MailboxId,
    MessageMeta,
    MessageSummary,
    NotFound,
    Outbound,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
    UserId,
    normalize_flags,
)
from poczta.store.codec import (
    decode_envelope,
    decode_headers,
    decode_structure,
    encode_envelope,
    encode_headers,
    encode_structure,
)
from poczta.store.flag_changes import flag_changes
from poczta.store.names import mailbox_name
from poczta.store.postgres.access import Connection
from poczta.store.postgres.bodies import add_blob_ref, blob_digest, release_blobs
from poczta.store.postgres.mailboxes import bump, lock_in_order, require_mailbox
from poczta.store.postgres.queue import insert_queue

__all__ = [
    "HasRoom",
    "deliver",
    "expunge",
    "fetch_meta",
    "fetch_summaries",
    "join_time",
    "message_digest",
    "set_flags",
    "split_time",
    "vanished",
]

#: Whether a user, in this quota state, has room for the message being delivered.
HasRoom = Callable[[UserId, QuotaState], bool]

_META_COLUMNS = (
    "uid, modseq, flags, internal_date, internal_date_zone, size, digest, header_size,"
    " sent_date, sent_date_zone, subject, envelope, headers, structure, imap_envelope,"
    " imap_bodystructure"
)
_INSERT = (
    "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, internal_date_zone,"
    " size, digest, header_size, sent_date, sent_date_zone, subject, message_id, envelope,"
    " headers, structure, imap_envelope, imap_bodystructure) VALUES ($1, $2, $3, $4, $5, $6,"
    " $7, $8, $9, $10, $11, $12, $13, $14::json, $15::json, $16::json, $17, $18)"
)
# Per target (in order): its mailbox (by special use first, else by name) and its user's
# quota usage and own limits (NULL usage: no such user).
_TARGETS = (
    "SELECT t.user_id, m.id AS mailbox_id, u.storage, u.messages,"
    " l.storage AS storage_limit, l.messages AS messages_limit"
    " FROM unnest($1::bigint[], $2::text[], $3::text[])"
    " WITH ORDINALITY AS t(user_id, name, special, n)"
    " LEFT JOIN LATERAL (SELECT b.id FROM mailboxes b WHERE b.user_id = t.user_id"
    " AND (b.special_use = t.special OR b.name = t.name)"
    " ORDER BY coalesce(b.special_use = t.special, false) DESC, b.id LIMIT 1) m ON true"
    " LEFT JOIN quota_usage u ON u.user_id = t.user_id"
    " LEFT JOIN quota_limits l ON l.user_id = t.user_id ORDER BY t.n"
)


def split_time(moment: datetime) -> tuple[datetime, int]:
    """(the instant, its offset in minutes east of UTC); a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset() or timedelta()
    return moment, int(offset.total_seconds() // 60)


def join_time(instant: datetime, zone: int) -> datetime:
    return instant.astimezone(timezone(timedelta(minutes=zone)))


def _columns(parsed: ParsedMessage) -> tuple[Any, ...]:
    """The cached parse: (size, header_size, sent_date, its zone, subject, message_id,
    envelope, headers, structure, and FETCH's ENVELOPE and BODYSTRUCTURE text)."""
    sent, sent_zone = split_time(parsed.date) if parsed.date else (None, None)
    return (
        parsed.size,
        parsed.header_size,
        sent,
        sent_zone,
        parsed.subject,
        parsed.envelope.message_id,
        encode_envelope(parsed.envelope),
        encode_headers(parsed.search_headers),
        encode_structure(parsed.structure),
        envelope_text(parsed.envelope),
        bodystructure_text(parsed.structure),
    )


async def _targets_and_quotas(
    conn: Connection, targets: Sequence[DeliveryTarget]
) -> tuple[list[int | None], dict[UserId, QuotaState]]:
    """Each target's mailbox id (None: it has none) and the quota state of each of their
    users, in one statement. A special use the user no longer has falls back to INBOX."""
    rows = await conn.fetch(
        _TARGETS,
        [t.user_id for t in targets],
        ["INBOX" if t.mailbox.startswith("\\") else mailbox_name(t.mailbox) for t in targets],
        [t.mailbox if t.mailbox.startswith("\\") else None for t in targets],
    )
    states = {
        UserId(row["user_id"]): QuotaState(
            QuotaUsage(row["storage"], row["messages"]),
            QuotaOverrides(row["storage_limit"], row["messages_limit"]),
        )
        for row in rows
        if row["storage"] is not None
    }
    return [row["mailbox_id"] for row in rows], states


async def deliver(
    conn: Connection,
    data: bytes,
    parsed: ParsedMessage,
    internal_date: datetime,
    targets: Sequence[DeliveryTarget],
    outbound: Outbound | None,
    room: HasRoom | None = None,
) -> tuple[Accepted, dict[UserId, QuotaState]]:
    """Store one message for `targets` and queue it for `outbound`, in this transaction.

    With `room`, the targets of a user it says has no room get no copy: the quota is
    read in this transaction, and the copies stored count against it before COMMIT.
    Returns what was stored and the quota state of each user left out."""
    found, states = await _targets_and_quotas(conn, targets)
    refused: dict[UserId, QuotaState] = {}
    if room is not None:
        refused = {user: state for user, state in states.items() if not room(user, state)}
    kept = [(t, m) for t, m in zip(targets, found, strict=True) if t.user_id not in refused]
    for target, mailbox_id in kept:
        if mailbox_id is None:
            raise NotFound(f"no mailbox {target.mailbox} for user {target.user_id}")
    mailbox_ids = [int(m) for _, m in kept if m is not None]
    queued = bool(outbound and outbound.recipients)
    if not mailbox_ids and not queued:
        return Accepted((), None), refused
    digest = blob_digest(data)
    await lock_in_order(conn, mailbox_ids)
    taken = [await bump(conn, mailbox_id, 1) for mailbox_id in mailbox_ids]
    await add_blob_ref(conn, digest, len(data), data, len(mailbox_ids) + (1 if queued else 0))
    internal, zone = split_time(internal_date)
    size, header_size, *rest = _columns(parsed)
    await conn.executemany(
        _INSERT,
        [
            (
                mailbox_id,
                uid,
                modseq,
                sorted(normalize_flags(target.flags)),
                internal,
                zone,
                size,
                digest,
                header_size,
                *rest,
            )
            for (target, _), mailbox_id, (uid, modseq) in zip(kept, mailbox_ids, taken, strict=True)
        ],
    )
    queue_id = None
    if outbound is not None and queued:
        queue_id = await insert_queue(conn, outbound, digest, len(data), datetime.now(UTC))
    delivered = tuple(
        Delivered(MailboxId(mailbox_id), uid)
        for mailbox_id, (uid, _) in zip(mailbox_ids, taken, strict=True)
    )
    return Accepted(delivered, queue_id), refused


def meta_of(row: Any) -> MessageMeta:
    """A `MessageMeta` of a row of `_META_COLUMNS`."""
    sent = row["sent_date"]
    return MessageMeta(
        uid=row["uid"],
        modseq=row["modseq"],
        flags=frozenset(row["flags"]),
        internal_date=join_time(row["internal_date"], row["internal_date_zone"]),
        size=row["size"],
        digest=row["digest"],
        header_size=row["header_size"],
        sent_date=None if sent is None else join_time(sent, row["sent_date_zone"] or 0),
        subject=row["subject"],
        envelope=decode_envelope(row["envelope"]),
        search_headers=decode_headers(row["headers"]),
        structure=decode_structure(row["structure"]),
        imap_envelope=row["imap_envelope"],
        imap_bodystructure=row["imap_bodystructure"],
    )


async def fetch_meta(
    conn: Connection, mailbox_id: int, uids: Sequence[int] | None
) -> list[MessageMeta]:
    await require_mailbox(conn, mailbox_id)
    if uids is None:
        rows = await conn.fetch(
            f"SELECT {_META_COLUMNS} FROM messages WHERE mailbox_id = $1 ORDER BY uid",
            mailbox_id,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_META_COLUMNS} FROM messages WHERE mailbox_id = $1"
            " AND uid = ANY($2::bigint[]) ORDER BY uid",
            mailbox_id,
            list(uids),
        )
    return [meta_of(r) for r in rows]


async def fetch_summaries(conn: Connection, mailbox_id: int) -> list[MessageSummary]:
    await require_mailbox(conn, mailbox_id)
    rows = await conn.fetch(
        "SELECT uid, size, digest FROM messages WHERE mailbox_id = $1 ORDER BY uid", mailbox_id
    )
    return [MessageSummary(r[0], r[1], r[2]) for r in rows]


async def message_digest(conn: Connection, mailbox_id: int, uid: int) -> str:
    digest = await conn.fetchval(
        "SELECT digest FROM messages WHERE mailbox_id = $1 AND uid = $2", mailbox_id, uid
    )
    if digest is None:
        raise NotFound(f"no message {uid} in mailbox {mailbox_id}")
    return str(digest)


async def set_flags(
    conn: Connection,
    mailbox_id: int,
    uids: Sequence[int],
    flags: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None,
) -> FlagResult:
    wanted = normalize_flags(flags)
    # The mailbox row first (every writer's order), then its messages.
    highest = await conn.fetchval(
        "SELECT highestmodseq FROM mailboxes WHERE id = $1 FOR UPDATE", mailbox_id
    )
    if highest is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    rows = await conn.fetch(
        "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1"
        " AND uid = ANY($2::bigint[]) ORDER BY uid",
        mailbox_id,
        list(uids),
    )
    current = ((uid, frozenset(old_flags), modseq) for uid, old_flags, modseq in rows)
    modified, updates = flag_changes(current, wanted, mode, unchangedsince)
    if not updates:
        return FlagResult((), tuple(modified), int(highest))
    _, modseq = await bump(conn, mailbox_id, 0)
    await conn.executemany(
        "UPDATE messages SET flags = $1, modseq = $2 WHERE mailbox_id = $3 AND uid = $4",
        [(sorted(new), modseq, mailbox_id, uid) for uid, new in updates],
    )
    changed = tuple((uid, new, modseq) for uid, new in updates)
    return FlagResult(changed, tuple(modified), modseq)


async def expunge(
    conn: Connection, mailbox_id: int, uids: Sequence[int] | None, now: float
) -> list[int]:
    """Remove the given messages (all flagged \\Deleted when `uids` is None)."""
    # The mailbox row first: the messages read next are not taken by another expunge.
    await require_mailbox(conn, mailbox_id, lock=True)
    if uids is None:
        rows = await conn.fetch(
            "SELECT uid, digest FROM messages WHERE mailbox_id = $1"
            " AND '\\Deleted' = ANY(flags) ORDER BY uid",
            mailbox_id,
        )
    else:
        rows = await conn.fetch(
            "SELECT uid, digest FROM messages WHERE mailbox_id = $1"
            " AND uid = ANY($2::bigint[]) ORDER BY uid",
            mailbox_id,
            list(uids),
        )
    if not rows:
        return []
    _, modseq = await bump(conn, mailbox_id, 0)
    gone = [int(r[0]) for r in rows]
    digests = await conn.fetch(
        "WITH gone AS (DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])"
        " RETURNING uid, digest), logged AS (INSERT INTO expunged (mailbox_id, uid, modseq)"
        " SELECT $1, uid, $3 FROM gone ON CONFLICT (mailbox_id, uid) DO UPDATE"
        " SET modseq = excluded.modseq)"
        " SELECT digest, count(*) FROM gone GROUP BY digest",
        mailbox_id,
        gone,
        modseq,
    )
    await release_blobs(conn, [(r[0], r[1]) for r in digests], now)
    return gone


async def vanished(conn: Connection, mailbox_id: int, since_modseq: int) -> list[int]:
    await require_mailbox(conn, mailbox_id)
    rows = await conn.fetch(
        "SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid",
        mailbox_id,
        since_modseq,
    )
    return [int(r[0]) for r in rows]
