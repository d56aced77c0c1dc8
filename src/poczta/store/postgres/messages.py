"""Messages in the PostgreSQL store: delivery, the cached parse, expunge, the expunged UIDs.

Async functions on a connection inside the caller's transaction. Every change to a
mailbox's messages takes the next MODSEQ of that mailbox (`mailboxes.bump`): a delivery
one per message, an expunge one per call (kept with the expunged UIDs for VANISHED; flag
changes are `flags`'). Writers lock mailbox rows first, then body rows.

A delivery finds its target mailboxes and their users' quota in one statement
(`find_targets`), then writes. One copy of a new body of one chunk goes in one
statement with the others waiting at once (`new_message`, `batch`: the mailbox rows,
the bodies, the UIDs and MODSEQs, the message rows), which commits on its own; anything
else, or one that statement left out, is `file_message` in a transaction: a new body
(`bodies.insert_new_blob`, which locks no row another writer could wait for) and then
the mailbox rows, taken last since every delivery into the mailbox waits for them; a
body stored before is counted (`bodies.add_blob_ref`) after the mailbox rows are locked.

Times keep their offset: a timestamptz column holds the instant and a smallint beside it
the offset in minutes east of UTC, put back on reading.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from poczta.message import ParsedMessage
from poczta.message.fetch_text import bodystructure_text, envelope_text
from poczta.store.base import (
    Accepted,
    Delivered,
    DeliveryTarget,
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
    PARSE_NOT_READ,
    StoredParse,
    decode_flags,
    encode_envelope,
    encode_headers,
    encode_structure,
    stored_parse,
)
from poczta.store.postgres.access import Connection
from poczta.store.postgres.batch import NewMessage
from poczta.store.postgres.bodies import (
    CHUNK,
    add_blob_ref,
    blob_digest,
    insert_new_blob,
    release_blobs,
)
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL, bump, lock_in_order, require_mailbox
from poczta.store.postgres.queue import insert_queue
from poczta.store.postgres.targets import mailbox_of, target_key

__all__ = [
    "FLAGS_TEXT",
    "KEPT_COLUMNS",
    "Filing",
    "HasRoom",
    "expunge",
    "fetch_summaries",
    "file_message",
    "find_targets",
    "fits_one_statement",
    "join_time",
    "kept_meta_of",
    "message_digest",
    "new_message",
    "split_time",
]

#: Whether a user, in this quota state, has room for the message being delivered.
HasRoom = Callable[[UserId, QuotaState], bool]

#: A message's flags as the codec's text (`codec.decode_flags`): one text per row is
#: cheaper to send and decode than an array, and equal texts share one decoded set.
FLAGS_TEXT = "array_to_string(flags, ' ')"
_META_COLUMNS = (
    f"uid, modseq, {FLAGS_TEXT} AS flags, internal_date, internal_date_zone, size, digest,"
    " header_size, sent_date, sent_date_zone, subject, envelope, headers, structure,"
    " imap_envelope, imap_bodystructure"
)
#: The facts a FETCH the kept texts answer needs (`fetch_meta`'s kept_only): without the
#: envelope, headers and structure, the largest columns of a row.
KEPT_COLUMNS = (
    f"uid, modseq, {FLAGS_TEXT} AS flags, internal_date, internal_date_zone, size, digest,"
    " header_size, sent_date, sent_date_zone, subject, imap_envelope, imap_bodystructure"
)
_INSERT = (
    "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, internal_date_zone,"
    " size, digest, header_size, sent_date, sent_date_zone, subject, message_id, envelope,"
    " headers, structure, imap_envelope, imap_bodystructure) VALUES ($1, $2, $3, $4, $5, $6,"
    " $7, $8, $9, $10, $11, $12, $13, $14::json, $15::json, $16::json, $17, $18)"
)
# `bump` and `_INSERT` in one statement, for a delivery into one mailbox ($1).
_FILE_ONE = (
    "WITH taken AS (UPDATE mailboxes SET uidnext = uidnext + 1,"
    " highestmodseq = highestmodseq + 1 WHERE id = $1 RETURNING id, uidnext - 1 AS uid,"
    " highestmodseq AS modseq), filed AS (INSERT INTO messages (mailbox_id, uid, modseq,"
    " flags, internal_date, internal_date_zone, size, digest, header_size, sent_date,"
    " sent_date_zone, subject, message_id, envelope, headers, structure, imap_envelope,"
    " imap_bodystructure) SELECT id, uid, modseq, $2::text[], $3::timestamptz, $4::smallint,"
    " $5::bigint, $6::text, $7::bigint, $8::timestamptz, $9::smallint, $10::text, $11::text,"
    " $12::json, $13::json, $14::json, $15::text, $16::text FROM taken)"
    f" SELECT uid, modseq, pg_notify('{CHANGES_CHANNEL}', id::text) FROM taken"
)
# Per target (in order): its mailbox (by special use first, else by name) and its user's
# quota usage and own limits (NULL usage: no such user).
_TARGETS = (
    "SELECT t.user_id, m.id AS mailbox_id, u.storage, u.messages,"
    " l.storage AS storage_limit, l.messages AS messages_limit"
    " FROM unnest($1::bigint[], $2::text[], $3::text[])"
    " WITH ORDINALITY AS t(user_id, name, special, n)"
    f" CROSS JOIN LATERAL (SELECT {mailbox_of('t.user_id', 't.name', 't.special')} AS id) m"
    " LEFT JOIN quota_usage u ON u.user_id = t.user_id"
    " LEFT JOIN quota_limits l ON l.user_id = t.user_id ORDER BY t.n"
)
# `_TARGETS` for one target (almost every delivery), with scalar parameters so that it
# is planned once per connection (why: `access.equals_any`).
_TARGET = (
    "SELECT $1::bigint AS user_id, m.id AS mailbox_id, u.storage, u.messages,"
    " l.storage AS storage_limit, l.messages AS messages_limit"
    " FROM (SELECT $1::bigint AS user_id) t"
    f" CROSS JOIN LATERAL (SELECT {mailbox_of('$1::bigint', '$2::text', '$3::text')} AS id) m"
    " LEFT JOIN quota_usage u ON u.user_id = t.user_id"
    " LEFT JOIN quota_limits l ON l.user_id = t.user_id"
)


def split_time(moment: datetime) -> tuple[datetime, int]:
    """(the instant, its offset in minutes east of UTC); a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset() or timedelta()
    return moment, int(offset.total_seconds() // 60)


def join_time(instant: datetime, zone: int) -> datetime:
    return instant.astimezone(_zone(zone))


@functools.cache
def _zone(minutes: int) -> timezone:
    """The fixed zone `minutes` east of UTC, made once (a few dozen ever occur)."""
    return timezone(timedelta(minutes=minutes))


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
    users, names, specials = (list(part) for part in zip(*map(target_key, targets), strict=True))
    if len(targets) == 1:
        rows = await conn.fetch(_TARGET, users[0], names[0], specials[0])
    else:
        rows = await conn.fetch(_TARGETS, users, names, specials)
    states = {
        UserId(row["user_id"]): QuotaState(
            QuotaUsage(row["storage"], row["messages"]),
            QuotaOverrides(row["storage_limit"], row["messages_limit"]),
        )
        for row in rows
        if row["storage"] is not None
    }
    return [row["mailbox_id"] for row in rows], states


@dataclass(frozen=True, slots=True)
class Filing:
    """Where a message's copies go once the quota is checked: the mailbox and flags of
    each copy, and the quota state of each user left out."""

    mailbox_ids: list[int]
    flags: list[list[str]]
    refused: dict[UserId, QuotaState]


async def find_targets(
    conn: Connection, targets: Sequence[DeliveryTarget], room: HasRoom | None
) -> Filing:
    """The mailboxes of `targets` and, with `room`, whose users have no room (their
    targets are left out), in one statement that locks nothing. NotFound for a target
    kept whose mailbox does not exist."""
    if not targets:
        return Filing([], [], {})
    found, states = await _targets_and_quotas(conn, targets)
    refused: dict[UserId, QuotaState] = {}
    if room is not None:
        refused = {user: state for user, state in states.items() if not room(user, state)}
    kept = [(t, m) for t, m in zip(targets, found, strict=True) if t.user_id not in refused]
    for target, mailbox_id in kept:
        if mailbox_id is None:
            raise NotFound(f"no mailbox {target.mailbox} for user {target.user_id}")
    return Filing(
        [int(m) for _, m in kept if m is not None],
        [sorted(normalize_flags(target.flags)) for target, _ in kept],
        refused,
    )


def fits_one_statement(data: bytes, filing: Filing, outbound: Outbound | None) -> bool:
    """Whether `new_message` may take it: one copy of a body of one chunk, nothing
    queued."""
    queued = outbound is not None and bool(outbound.recipients)
    return len(filing.mailbox_ids) == 1 and not queued and len(data) <= CHUNK


def new_message(
    data: bytes, parsed: ParsedMessage, internal_date: datetime, filing: Filing
) -> NewMessage:
    """The one copy of `filing` (see `fits_one_statement`) for `batch.file_new_messages`."""
    digest = blob_digest(data)
    row = _row(parsed, internal_date, digest, filing.flags[0])
    return NewMessage(filing.mailbox_ids[0], digest, data, row)


def _row(
    parsed: ParsedMessage, internal_date: datetime, digest: str, flags: list[str]
) -> tuple[Any, ...]:
    """A message row's columns after its mailbox, UID and MODSEQ (as in `_INSERT`)."""
    internal, zone = split_time(internal_date)
    size, header_size, *rest = _columns(parsed)
    return (flags, internal, zone, size, digest, header_size, *rest)


async def file_message(
    conn: Connection,
    data: bytes,
    parsed: ParsedMessage,
    internal_date: datetime,
    mailbox_ids: Sequence[int],
    flags: Sequence[list[str]],
    outbound: Outbound | None,
) -> Accepted:
    """The body, a message row in each mailbox (with its flags) and the queue entry, in
    the caller's transaction.

    A new body locks nothing another writer waits for, so the mailboxes' rows, which
    every delivery into them waits for, are taken last, just before COMMIT. A body
    stored before has its row locked after the mailboxes', the order every other writer
    follows."""
    digest = blob_digest(data)
    queued = outbound is not None and bool(outbound.recipients)
    refs = len(mailbox_ids) + (1 if queued else 0)
    rows = [_row(parsed, internal_date, digest, f) for f in flags]
    queue_id = None
    if await insert_new_blob(conn, digest, data, refs):
        if outbound is not None and queued:
            queue_id = await insert_queue(conn, outbound, digest, len(data), datetime.now(UTC))
        taken = await _file(conn, mailbox_ids, rows)
    else:
        await lock_in_order(conn, mailbox_ids)
        taken = [await bump(conn, mailbox_id, 1) for mailbox_id in mailbox_ids]
        await add_blob_ref(conn, digest, len(data), data, refs)
        await _insert_rows(conn, mailbox_ids, taken, rows)
        if outbound is not None and queued:
            queue_id = await insert_queue(conn, outbound, digest, len(data), datetime.now(UTC))
    delivered = tuple(
        Delivered(MailboxId(mailbox_id), uid)
        for mailbox_id, (uid, _) in zip(mailbox_ids, taken, strict=True)
    )
    return Accepted(delivered, queue_id)


async def _insert_rows(
    conn: Connection,
    mailbox_ids: Sequence[int],
    taken: Sequence[tuple[int, int]],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    await conn.executemany(
        _INSERT,
        [
            (mailbox_id, uid, modseq, *row)
            for mailbox_id, (uid, modseq), row in zip(mailbox_ids, taken, rows, strict=True)
        ],
    )


async def _file(
    conn: Connection, mailbox_ids: Sequence[int], rows: Sequence[tuple[Any, ...]]
) -> list[tuple[int, int]]:
    """Take a UID and MODSEQ in each mailbox and insert its message row: (UID, MODSEQ) of
    each. Into one mailbox, one statement (its row locked until COMMIT)."""
    if len(mailbox_ids) != 1:
        await lock_in_order(conn, mailbox_ids)
        taken = [await bump(conn, mailbox_id, 1) for mailbox_id in mailbox_ids]
        await _insert_rows(conn, mailbox_ids, taken, rows)
        return taken
    found = await conn.fetchrow(_FILE_ONE, mailbox_ids[0], *rows[0])
    if found is None:
        raise NotFound(f"no mailbox {mailbox_ids[0]}")
    return [(int(found[0]), int(found[1]))]


def meta_of(row: Any) -> MessageMeta:
    """A `MessageMeta` of a row of `_META_COLUMNS` (unpacked by position, the cheapest
    way to read an asyncpg row); the envelope, headers and structure decoded when first
    used (a FETCH of the kept ENVELOPE and BODYSTRUCTURE text, or a SEARCH of flags,
    never needs them: decoding all three was most of a first-open FETCH)."""
    envelope, headers, structure, imap_envelope, imap_text = row[11:]
    return _facts(row, stored_parse(envelope, headers, structure), imap_envelope, imap_text)


def kept_meta_of(row: Any) -> MessageMeta:
    """A `MessageMeta` of a row of `KEPT_COLUMNS`: the parts not read are NOT_READ."""
    return _facts(row, PARSE_NOT_READ, row[11], row[12])


def _facts(
    row: Any,
    parse: StoredParse,
    imap_envelope: str | None,
    imap_bodystructure: str | None,
) -> MessageMeta:
    """The facts of a row whose first eleven columns are those both column lists start with."""
    uid, modseq, flags, internal, internal_zone, size, digest, header_size = row[:8]
    sent, sent_zone, subject = row[8:11]
    return MessageMeta(
        uid,
        modseq,
        decode_flags(flags),
        join_time(internal, internal_zone),
        size,
        digest,
        header_size,
        None if sent is None else join_time(sent, sent_zone or 0),
        subject,
        *parse,
        imap_envelope,
        imap_bodystructure,
    )


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
