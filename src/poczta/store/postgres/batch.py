"""Deliveries that wait at once, written in one statement: one commit, one WAL flush.

A delivery into a mailbox holds that mailbox's row (its UID counter) until its commit is
flushed, so deliveries into one busy mailbox would commit one flush at a time. The
simple ones (one copy of a new body of one chunk, see `messages.fits_one_statement`)
that a process has waiting while a statement of them runs are written together by the
next one: every mailbox row locked in id order, every new body with its chunk, the
UIDs and MODSEQs taken per mailbox in one update, the message rows; then one commit.
A delivery that finds nobody writing goes at once, so an idle server adds no wait.

Any that the statement leaves out (its body is stored already, or its mailbox is gone)
or that it fails for get None, and the caller stores each in a transaction of its own
(`messages.file_message`), where they meet the usual answers; the database being
unreachable is told to each as `StoreUnavailable`.
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
from poczta.store.base import Delivered, MailboxId
from poczta.store.postgres.access import Connection, Database
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL

__all__ = [
    "MAX_BATCH",
    "MAX_BATCH_OCTETS",
    "DeliveryBatches",
    "NewMessage",
    "WriteBatch",
    "file_new_messages",
    "tell_waiters",
    "write_batches",
]

R = TypeVar("R")

MAX_BATCH = 64  # deliveries per statement
MAX_BATCH_OCTETS = 4 * 1024 * 1024  # bodies per statement, beyond its first

# $1.. are one array per column, an element per delivery (`_COLUMNS`' order).
_FILE_NEW = (
    "WITH item AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[],"
    " $5::text[], $6::timestamptz[], $7::smallint[], $8::bigint[], $9::bigint[],"
    " $10::timestamptz[], $11::smallint[], $12::text[], $13::text[], $14::text[],"
    " $15::text[], $16::text[], $17::text[], $18::text[]) WITH ORDINALITY AS i(mailbox_id,"
    " digest, octets, data, flags, internal_date, zone, size, header_size, sent_date,"
    " sent_zone, subject, message_id, envelope, headers, structure, imap_envelope,"
    " imap_bodystructure, n)),"
    " box AS (SELECT id FROM mailboxes WHERE id IN (SELECT mailbox_id FROM item)"
    " ORDER BY id FOR UPDATE),"
    # one delivery per digest (the first) may store a body the batch holds twice
    " chosen AS (SELECT DISTINCT ON (digest) n, digest FROM item"
    " WHERE mailbox_id IN (SELECT id FROM box) ORDER BY digest, n),"
    " body AS (INSERT INTO blobs (digest, size, refs) SELECT i.digest, i.octets, 1"
    " FROM chosen JOIN item i USING (n) ON CONFLICT (digest) DO NOTHING"
    " RETURNING id, digest),"
    " body_chunk AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT b.id, 0, i.data"
    " FROM body b JOIN chosen c USING (digest) JOIN item i USING (n) WHERE i.octets > 0),"
    " filed AS (SELECT i.*, row_number() OVER (PARTITION BY i.mailbox_id ORDER BY i.n)"
    " AS rank FROM body b JOIN chosen c USING (digest) JOIN item i ON i.n = c.n),"
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
    f" SELECT f.n, t.uid + f.rank - 1, pg_notify('{CHANGES_CHANNEL}', t.id::text)"
    " FROM filed f JOIN taken t ON t.id = f.mailbox_id"
)


def write_batches(db: Database) -> WriteBatch:
    """Each batch as one statement on `db`'s pool, its own transaction."""
    return lambda items: db.statement(partial(file_new_messages, items=items))


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One delivery for `file_new_messages`: its mailbox, its body (of one chunk, its
    digest) and its message row's columns after mailbox, UID and MODSEQ (flags first,
    as `messages._row` gives them)."""

    mailbox_id: int
    digest: str
    data: bytes
    row: tuple[Any, ...]


async def file_new_messages(
    conn: Connection, items: Sequence[NewMessage]
) -> list[Delivered | None]:
    """Store `items` in one statement: for each, what was delivered, or None when it was
    left out (its body is stored already, by another or earlier in the batch, or its
    mailbox is gone)."""
    columns: list[list[Any]] = [
        [item.mailbox_id for item in items],
        [item.digest for item in items],
        [len(item.data) for item in items],
        [item.data for item in items],
        [json.dumps(item.row[0]) for item in items],
    ]
    # the row after its flags, but without the digest (the second array already)
    rest = [item.row[1:4] + item.row[5:] for item in items]
    columns += [list(column) for column in zip(*rest, strict=True)]
    found = {n: uid for n, uid, _ in await conn.fetch(_FILE_NEW, *columns)}
    return [
        Delivered(MailboxId(item.mailbox_id), int(found[n])) if n in found else None
        for n, item in enumerate(items, start=1)
    ]


#: Stores a batch: for each delivery, what was delivered or None (left out).
WriteBatch = Callable[[Sequence["NewMessage"]], Awaitable[list[Delivered | None]]]


class DeliveryBatches:
    """The deliveries of this process waiting to be written, and the one writing them."""

    def __init__(self, write: WriteBatch, max_batch: int = MAX_BATCH) -> None:
        """`write` stores a batch (`file_new_messages` in a statement of its own)."""
        self._write = write
        self._max = max_batch
        self._waiting: list[tuple[NewMessage, asyncio.Future[Delivered | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def file(self, item: NewMessage) -> Delivered | None:
        """Store `item` with whatever else waits: what was delivered, or None (the caller
        stores it another way)."""
        future: asyncio.Future[Delivered | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())
        return await future

    async def _write_all(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            items = [item for item, _ in batch]
            results: Sequence[Delivered | BaseException | None]
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

    def _next_batch(self) -> list[tuple[NewMessage, asyncio.Future[Delivered | None]]]:
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
