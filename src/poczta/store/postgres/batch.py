"""Deliveries that wait at once, written in one statement: one commit, one WAL flush.

A delivery into a mailbox holds that mailbox's row (its UID counter) until its commit is
flushed, so deliveries into one busy mailbox would commit one flush at a time. The
simple ones (one copy of a new body of one chunk, see `messages.fits_one_statement`)
that a process has waiting while a statement of them runs are written together by the
next one: each target's mailbox found (or given), every mailbox row locked in id order,
then the users' quota usage rows, each delivery held to its user's quota (with those
before it in the batch for the same user), every new body with its chunk, the UIDs and
MODSEQs taken per mailbox in one update, the message rows; then one commit. A delivery
that finds nobody writing goes at once, so an idle server adds no wait.

One whose user has no room for it is refused (`NoRoom`, with the state that refused
it). Any that the statement leaves out (its body is stored already, its mailbox is gone,
or its user has room for it but not for those before it too) or that it fails for get
None, and the caller stores each in a transaction of its own (`messages.file_message`),
where they meet the usual answers; the database being unreachable is told to each as
`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import asyncpg

from poczta.logs import log
from poczta.store.base import (
    Delivered,
    DeliveryTarget,
    MailboxId,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
)
from poczta.store.postgres.access import Connection, Database
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL
from poczta.store.postgres.targets import mailbox_of, target_key

__all__ = [
    "MAX_BATCH",
    "MAX_BATCH_OCTETS",
    "DeliveryBatches",
    "Filed",
    "NewMessage",
    "NoRoom",
    "WriteBatch",
    "file_new_messages",
    "tell_waiters",
    "write_batches",
]

R = TypeVar("R")

MAX_BATCH = 64  # deliveries per statement
MAX_BATCH_OCTETS = 4 * 1024 * 1024  # bodies per statement, beyond its first

# $1.. are one array per column, an element per delivery (`_COLUMNS`' order): its mailbox
# (NULL: the one of to_user by special use first, else by name, as `messages.find_targets`
# finds it), the default quota limits its user is held to (NULL: no check), its body and
# its message row.
_FILE_NEW = (
    "WITH item AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],"
    " $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::bytea[], $10::text[],"
    " $11::timestamptz[], $12::smallint[], $13::bigint[], $14::bigint[], $15::timestamptz[],"
    " $16::smallint[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[],"
    " $22::text[], $23::text[]) WITH ORDINALITY AS i(box_id, to_user, to_name, to_special,"
    " storage_default, messages_default, digest, octets, data, flags, internal_date, zone,"
    " size, header_size, sent_date, sent_zone, subject, message_id, envelope, headers,"
    " structure, imap_envelope, imap_bodystructure, n)),"
    " target AS (SELECT i.n, coalesce(i.box_id,"
    f" {mailbox_of('i.to_user', 'i.to_name', 'i.to_special')}) AS mailbox_id FROM item i),"
    " box AS (SELECT id, user_id FROM mailboxes WHERE id IN (SELECT mailbox_id FROM target)"
    " ORDER BY id FOR UPDATE),"
    # The users' usage rows after every mailbox row (the count gates the scan: the order of
    # every writer), locked: each is its latest committed state, and stays it until COMMIT.
    " usage AS (SELECT q.user_id, q.storage, q.messages FROM quota_usage q"
    " WHERE (SELECT count(*) FROM box) > 0 AND q.user_id IN (SELECT user_id FROM box)"
    " ORDER BY q.user_id FOR UPDATE),"
    " judged AS (SELECT i.n, i.digest, i.octets, i.storage_default, t.mailbox_id, u.storage,"
    " u.messages, l.storage AS storage_limit, l.messages AS messages_limit,"
    " coalesce(l.storage, i.storage_default) AS storage_max,"
    " coalesce(l.messages, i.messages_default) AS messages_max,"
    " sum(i.octets) OVER mine AS octets_so_far, count(*) OVER mine AS count_so_far"
    " FROM item i JOIN target t USING (n) JOIN box b ON b.id = t.mailbox_id"
    " LEFT JOIN usage u ON u.user_id = b.user_id"
    " LEFT JOIN quota_limits l ON l.user_id = b.user_id"
    " WINDOW mine AS (PARTITION BY b.user_id ORDER BY i.n)),"
    # `poczta.quota.UserQuota.room_for` (0: no limit): room for the message alone, and with
    # those before it in the batch for the same user
    " ruled AS (SELECT j.*, j.storage_default IS NULL OR j.storage IS NULL"
    " OR ((j.storage_max = 0 OR j.storage + j.octets <= j.storage_max)"
    " AND (j.messages_max = 0 OR j.messages + 1 <= j.messages_max)) AS fits,"
    " j.storage_default IS NULL OR j.storage IS NULL"
    " OR ((j.storage_max = 0 OR j.storage + j.octets_so_far <= j.storage_max)"
    " AND (j.messages_max = 0 OR j.messages + j.count_so_far <= j.messages_max)) AS fits_all"
    " FROM judged j),"
    # one delivery per digest (the first) may store a body the batch holds twice
    " chosen AS (SELECT DISTINCT ON (digest) n, digest, mailbox_id FROM ruled"
    " WHERE fits_all ORDER BY digest, n),"
    " body AS (INSERT INTO blobs (digest, size, refs) SELECT i.digest, i.octets, 1"
    " FROM chosen JOIN item i USING (n) ON CONFLICT (digest) DO NOTHING"
    " RETURNING id, digest),"
    " body_chunk AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT b.id, 0, i.data"
    " FROM body b JOIN chosen c USING (digest) JOIN item i USING (n) WHERE i.octets > 0),"
    " filed AS (SELECT i.*, c.mailbox_id, row_number() OVER (PARTITION BY c.mailbox_id"
    " ORDER BY i.n) AS rank FROM body b JOIN chosen c USING (digest) JOIN item i ON i.n = c.n),"
    " taken AS (UPDATE mailboxes m SET uidnext = m.uidnext + c.k,"
    " highestmodseq = m.highestmodseq + c.k FROM (SELECT mailbox_id, count(*) AS k"
    " FROM filed GROUP BY mailbox_id) c WHERE m.id = c.mailbox_id"
    " RETURNING m.id, m.uidnext - c.k AS uid, m.highestmodseq - c.k AS modseq),"
    " added AS (INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date,"
    " internal_date_zone, size, digest, header_size, sent_date, sent_date_zone, subject,"
    " message_id, envelope, headers, structure, imap_envelope, imap_bodystructure)"
    " SELECT f.mailbox_id, t.uid + f.rank - 1, t.modseq + f.rank,"
    " ARRAY(SELECT json_array_elements_text(f.flags::json)), f.internal_date, f.zone,"
    " f.size, f.digest, f.header_size, f.sent_date, f.sent_zone, f.subject, f.message_id,"
    " f.envelope::json, f.headers::json, f.structure::json, f.imap_envelope,"
    " f.imap_bodystructure FROM filed f JOIN taken t ON t.id = f.mailbox_id)"
    " SELECT r.n, r.mailbox_id, t.uid + f.rank - 1 AS uid, r.fits, r.storage, r.messages,"
    " r.storage_limit, r.messages_limit,"
    f" CASE WHEN t.id IS NOT NULL THEN pg_notify('{CHANGES_CHANNEL}', t.id::text) END"
    " FROM ruled r LEFT JOIN filed f ON f.n = r.n LEFT JOIN taken t ON t.id = f.mailbox_id"
)


def write_batches(db: Database) -> WriteBatch:
    """Each batch as one statement on `db`'s pool, its own transaction."""
    return lambda items: db.statement(partial(file_new_messages, items=items))


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One delivery for `file_new_messages`: its mailbox (None: the one of `to`, found by
    the statement), its body (of one chunk, its digest) and its message row's columns
    after mailbox, UID and MODSEQ (flags first, as `messages._row` gives them). With
    `quota`, the default limits (octets, messages; 0: none) its user is held to unless
    the user has limits of its own: the statement leaves it out when there is no room."""

    mailbox_id: int | None
    digest: str
    data: bytes
    row: tuple[Any, ...]
    to: DeliveryTarget | None = None
    quota: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class NoRoom:
    """A delivery the statement refused: its user had no room; the user's quota state."""

    state: QuotaState


#: What became of one delivery of a batch: stored, refused, or left out (None).
Filed = Delivered | NoRoom | None


def _target_columns(item: NewMessage) -> tuple[int | None, str | None, str | None]:
    """(user, mailbox name, special use) of `item.to` (`targets.target_key`), or NULLs."""
    return (None, None, None) if item.to is None else target_key(item.to)


async def file_new_messages(conn: Connection, items: Sequence[NewMessage]) -> list[Filed]:
    """Store `items` in one statement: for each, what was delivered, `NoRoom` when its
    user has no room for it alone, or None when it was left out (its body is stored
    already, by another or earlier in the batch, its mailbox is gone, or its user has
    room for it but not with those before it in the batch)."""
    targets = [_target_columns(item) for item in items]
    limits = [item.quota or (None, None) for item in items]
    columns: list[list[Any]] = [
        [item.mailbox_id for item in items],
        *(list(column) for column in zip(*targets, strict=True)),
        *(list(column) for column in zip(*limits, strict=True)),
        [item.digest for item in items],
        [len(item.data) for item in items],
        [item.data for item in items],
        [json.dumps(item.row[0]) for item in items],
    ]
    # the row after its flags, but without the digest (the seventh array already)
    rest = [item.row[1:4] + item.row[5:] for item in items]
    columns += [list(column) for column in zip(*rest, strict=True)]
    found = {row[0]: _filed(row) for row in await conn.fetch(_FILE_NEW, *columns)}
    return [found.get(n) for n in range(1, len(items) + 1)]


def _filed(row: Any) -> Filed:
    """One delivery's answer from a row of `_FILE_NEW`."""
    if row["uid"] is not None:
        return Delivered(MailboxId(row["mailbox_id"]), int(row["uid"]))
    if row["fits"]:
        return None
    usage = QuotaUsage(row["storage"], row["messages"])
    return NoRoom(QuotaState(usage, QuotaOverrides(row["storage_limit"], row["messages_limit"])))


#: Stores a batch: for each delivery, what became of it.
WriteBatch = Callable[[Sequence["NewMessage"]], Awaitable[list[Filed]]]


class DeliveryBatches:
    """The deliveries of this process waiting to be written, and the one writing them."""

    def __init__(self, write: WriteBatch, max_batch: int = MAX_BATCH) -> None:
        """`write` stores a batch (`file_new_messages` in a statement of its own)."""
        self._write = write
        self._max = max_batch
        self._waiting: list[tuple[NewMessage, asyncio.Future[Filed]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def file(self, item: NewMessage) -> Filed:
        """Store `item` with whatever else waits: what became of it (`file_new_messages`;
        None: the caller stores it another way)."""
        future: asyncio.Future[Filed] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())
        return await future

    async def _write_all(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            items = [item for item, _ in batch]
            results: Sequence[Filed | BaseException]
            try:
                results = await self._write(items)
            except asyncpg.PostgresError as exc:  # a deadlock, say: each goes on its own
                log("store.batch_failed", level=logging.WARNING, size=len(batch), error=exc)
                results = [None] * len(batch)
            except BaseException as exc:  # the database unreachable (StoreUnavailable)...
                tell_waiters(batch, [exc] * len(batch))
                if not isinstance(exc, Exception):
                    raise
                continue
            tell_waiters(batch, results)

    def _next_batch(self) -> list[tuple[NewMessage, asyncio.Future[Filed]]]:
        """Take the first waiting deliveries, up to the batch's count and octets."""
        octets, count = 0, 0
        for item, _ in self._waiting[: self._max]:
            octets += len(item.data)
            if count and octets > MAX_BATCH_OCTETS:
                break
            count += 1
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch


def tell_waiters(
    batch: Sequence[tuple[object, asyncio.Future[R]]], results: Sequence[R | BaseException]
) -> None:
    """Give each waiter of a batch its result (or its exception), in order; a waiter
    whose caller gave up is left alone."""
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
