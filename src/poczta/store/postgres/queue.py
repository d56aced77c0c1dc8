"""The outbound queue in the PostgreSQL store: entries, their recipients' states, and claims.

Async functions on a connection inside the caller's transaction. A recipient's result is
only ever written while it is pending, so a late or repeated write can never turn a
delivered recipient back into a pending one. An entry holds one reference to its body,
released (`poczta.store.postgres.bodies`) when the entry is finished or deleted. Runners
on several nodes claim entries with `FOR UPDATE SKIP LOCKED`: two never claim the same
entry, and neither waits for the other's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from poczta.store.base import (
    DELIVERED,
    FAILED,
    PENDING,
    ClaimLost,
    NotFound,
    Outbound,
    QueueEntry,
    QueueId,
    QueueRecipient,
    RecipientAttempt,
    StoreError,
    normalize_address,
)
from poczta.store.postgres.access import Connection
from poczta.store.postgres.bodies import add_blob_ref, release_blobs

__all__ = [
    "bounce",
    "claim",
    "delete",
    "enqueue",
    "finish",
    "flush",
    "get_entry",
    "hold",
    "insert_queue",
    "list_queue",
    "mark_reported",
    "next_due",
    "record_attempt",
    "release_claims",
    "renew_claims",
    "reschedule",
]

_ENTRY_COLUMNS = (
    "id, sender, digest, size, created, next_attempt, attempts, last_error, envid, ret,"
    " held, delay_warned, claimed_by, claimed_until"
)
_RECIPIENT_COLUMNS = (
    "queue_id, address, status, last_error, attempts, reply_code, reply_enhanced,"
    " remote_mta, tls, notify, orcpt, reported, last_attempt"
)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def insert_queue(
    conn: Connection, outbound: Outbound, digest: str, size: int, now: datetime
) -> QueueId:
    """Insert an entry (the caller has counted its reference to the body)."""
    stamp = _utc(now)
    queue_id = await conn.fetchval(
        "INSERT INTO queue (sender, digest, size, created, next_attempt, envid, ret)"
        " VALUES ($1, $2, $3, $4, $4, $5, $6) RETURNING id",
        outbound.sender,
        digest,
        size,
        stamp,
        outbound.envid,
        outbound.ret,
    )
    rows: dict[str, tuple[str | None, str | None]] = {}
    for given in outbound.recipients:
        address = normalize_address(given)
        dsn = outbound.dsn.get(given) or outbound.dsn.get(address)
        notify = ",".join(dsn.notify) if dsn is not None and dsn.notify is not None else None
        rows.setdefault(address, (notify, dsn.orcpt if dsn is not None else None))
    await conn.executemany(
        "INSERT INTO queue_recipients (queue_id, address, notify, orcpt) VALUES ($1, $2, $3, $4)",
        [(queue_id, address, notify, orcpt) for address, (notify, orcpt) in rows.items()],
    )
    return QueueId(queue_id)


async def enqueue(
    conn: Connection, outbound: Outbound, digest: str, size: int, now: datetime
) -> QueueId:
    if not outbound.recipients:
        raise StoreError("a queue entry needs at least one recipient")
    await add_blob_ref(conn, digest, size, None, 1)
    return await insert_queue(conn, outbound, digest, size, now)


# --- reading ---------------------------------------------------------------


def _recipient(row: Any) -> QueueRecipient:
    notify = row["notify"]
    return QueueRecipient(
        address=row["address"],
        status=row["status"],
        last_error=row["last_error"],
        attempts=row["attempts"],
        reply_code=row["reply_code"],
        reply_enhanced=row["reply_enhanced"],
        remote_mta=row["remote_mta"],
        tls=row["tls"],
        notify=None if notify is None else tuple(filter(None, notify.split(","))),
        orcpt=row["orcpt"],
        reported=row["reported"],
        last_attempt=row["last_attempt"],
    )


def _entry(row: Any, recipients: Sequence[QueueRecipient]) -> QueueEntry:
    return QueueEntry(
        id=QueueId(row["id"]),
        sender=row["sender"],
        recipients=tuple(recipients),
        digest=row["digest"],
        size=row["size"],
        created=row["created"],
        next_attempt=row["next_attempt"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        envid=row["envid"],
        ret=row["ret"],
        held=row["held"],
        delay_warned=row["delay_warned"],
        claimed_by=row["claimed_by"],
        claimed_until=row["claimed_until"],
    )


async def _entries(conn: Connection, where: str, *params: object) -> list[QueueEntry]:
    rows = await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM queue {where} ORDER BY next_attempt, id", *params
    )
    if not rows:
        return []
    recipients: dict[int, list[QueueRecipient]] = {}
    for row in await conn.fetch(
        f"SELECT {_RECIPIENT_COLUMNS} FROM queue_recipients WHERE queue_id = ANY($1::bigint[])"
        " ORDER BY address",
        [row["id"] for row in rows],
    ):
        recipients.setdefault(row["queue_id"], []).append(_recipient(row))
    return [_entry(row, recipients.get(row["id"], ())) for row in rows]


async def list_queue(conn: Connection) -> list[QueueEntry]:
    return await _entries(conn, "")


async def get_entry(conn: Connection, queue_id: int) -> QueueEntry:
    found = await _entries(conn, "WHERE id = $1", queue_id)
    if not found:
        raise NotFound(f"no queue entry {queue_id}")
    return found[0]


async def next_due(conn: Connection) -> datetime | None:
    """When the next entry may be claimed: a claimed one once its claim runs out."""
    due: datetime | None = await conn.fetchval(
        "SELECT min(greatest(next_attempt, claimed_until)) FROM queue WHERE NOT held"
    )
    return due


# --- the runner's writes -----------------------------------------------------


async def claim(
    conn: Connection, owner: str, now: datetime, until: datetime, limit: int
) -> list[QueueEntry]:
    ids = [
        row[0]
        for row in await conn.fetch(
            "SELECT id FROM queue WHERE NOT held AND next_attempt <= $1"
            " AND (claimed_until IS NULL OR claimed_until < $1)"
            " ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            _utc(now),
            limit,
        )
    ]
    if not ids:
        return []
    await conn.execute(
        "UPDATE queue SET claimed_by = $1, claimed_until = $2 WHERE id = ANY($3::bigint[])",
        owner,
        _utc(until),
        ids,
    )
    return await _entries(conn, "WHERE id = ANY($1::bigint[])", ids)


def _count(status: str) -> int:
    return int(status.rpartition(" ")[2])


async def renew_claims(
    conn: Connection, owner: str, until: datetime, ids: Sequence[int] | None = None
) -> int:
    sql = "UPDATE queue SET claimed_until = $1 WHERE claimed_by = $2"
    if ids is None:
        return _count(await conn.execute(sql, _utc(until), owner))
    return _count(
        await conn.execute(f"{sql} AND id = ANY($3::bigint[])", _utc(until), owner, list(ids))
    )


async def release_claims(conn: Connection, prefix: str, keep: str) -> int:
    return _count(
        await conn.execute(
            "UPDATE queue SET claimed_by = NULL, claimed_until = NULL"
            " WHERE starts_with(claimed_by, $1) AND claimed_by <> $2",
            prefix,
            keep,
        )
    )


async def claim_holders(conn: Connection) -> list[str]:
    """The owners of the claims there are now, lasting or run out."""
    rows = await conn.fetch("SELECT DISTINCT claimed_by FROM queue WHERE claimed_by IS NOT NULL")
    return [str(row[0]) for row in rows]


async def release_claims_of(conn: Connection, owners: Sequence[str]) -> int:
    return _count(
        await conn.execute(
            "UPDATE queue SET claimed_by = NULL, claimed_until = NULL"
            " WHERE claimed_by = ANY($1::text[])",
            list(owners),
        )
    )


async def record_attempt(
    conn: Connection,
    queue_id: int,
    results: Sequence[RecipientAttempt],
    now: datetime,
    owner: str | None = None,
) -> None:
    """The results, in the caller's transaction; with `owner`, only while `owner` claims
    the entry (its row locked meanwhile, so no claim slips in), else ClaimLost."""
    for status in {r.status for r in results} - {PENDING, DELIVERED, FAILED}:
        raise StoreError(f"unknown recipient status {status!r}")
    if owner is not None:
        row = await conn.fetchrow("SELECT claimed_by FROM queue WHERE id = $1 FOR UPDATE", queue_id)
        if row is None:
            raise NotFound(f"no queue entry {queue_id}")
        if row[0] != owner:
            raise ClaimLost(f"queue entry {queue_id} is not claimed by {owner}")
    await conn.executemany(
        "UPDATE queue_recipients SET status = $1, last_error = $2, reply_code = $3,"
        " reply_enhanced = $4, remote_mta = $5, tls = $6, attempts = attempts + 1,"
        " last_attempt = $7 WHERE queue_id = $8 AND address = $9 AND status = 'pending'",
        [
            (
                r.status,
                r.text,
                r.reply_code,
                r.reply_enhanced,
                r.remote_mta,
                r.tls,
                _utc(now),
                queue_id,
                normalize_address(r.address),
            )
            for r in results
        ],
    )


async def reschedule(
    conn: Connection, queue_id: int, owner: str, next_attempt: datetime, error: str | None
) -> None:
    await conn.execute(
        "UPDATE queue SET attempts = attempts + 1, next_attempt = $1, last_error = $2,"
        " claimed_by = NULL, claimed_until = NULL WHERE id = $3 AND claimed_by = $4",
        _utc(next_attempt),
        error,
        queue_id,
        owner,
    )


async def mark_reported(
    conn: Connection, queue_id: int, addresses: Sequence[str], delay_warning: bool
) -> None:
    await conn.execute(
        "UPDATE queue_recipients SET reported = true WHERE queue_id = $1"
        " AND address = ANY($2::text[])",
        queue_id,
        [normalize_address(a) for a in addresses],
    )
    if delay_warning:
        await conn.execute("UPDATE queue SET delay_warned = true WHERE id = $1", queue_id)


async def _remove(conn: Connection, queue_id: int, now: float) -> bool:
    digest = await conn.fetchval("DELETE FROM queue WHERE id = $1 RETURNING digest", queue_id)
    if digest is None:
        return False  # its recipients went by cascade
    await release_blobs(conn, [(str(digest), 1)], now)
    return True


async def finish(conn: Connection, queue_id: int, now: float) -> bool:
    left = await conn.fetchval(
        "SELECT 1 FROM queue_recipients WHERE queue_id = $1 AND status = 'pending' LIMIT 1",
        queue_id,
    )
    return left is None and await _remove(conn, queue_id, now)


async def _require(conn: Connection, queue_id: int) -> None:
    if await conn.fetchval("SELECT 1 FROM queue WHERE id = $1", queue_id) is None:
        raise NotFound(f"no queue entry {queue_id}")


async def delete(conn: Connection, queue_id: int, now: float) -> None:
    if not await _remove(conn, queue_id, now):
        raise NotFound(f"no queue entry {queue_id}")


async def hold(conn: Connection, queue_id: int, held: bool) -> None:
    await _require(conn, queue_id)
    await conn.execute("UPDATE queue SET held = $1 WHERE id = $2", held, queue_id)


async def bounce(conn: Connection, queue_id: int, text: str, now: datetime) -> None:
    await _require(conn, queue_id)
    stamp = _utc(now)
    await conn.execute(
        "UPDATE queue_recipients SET status = 'failed', last_error = $1, reply_code = NULL,"
        " reply_enhanced = '5.0.0', remote_mta = NULL, last_attempt = $2"
        " WHERE queue_id = $3 AND status = 'pending'",
        text,
        stamp,
        queue_id,
    )
    await conn.execute(
        "UPDATE queue SET held = false, next_attempt = $1, last_error = $2 WHERE id = $3",
        stamp,
        text,
        queue_id,
    )


async def flush(conn: Connection, now: datetime, queue_id: int | None) -> int:
    stamp = _utc(now)
    if queue_id is not None:
        await _require(conn, queue_id)
        status = await conn.execute(
            "UPDATE queue SET next_attempt = $1 WHERE id = $2 AND NOT held", stamp, queue_id
        )
    else:
        status = await conn.execute(
            "UPDATE queue SET next_attempt = $1 WHERE NOT held AND next_attempt > $1", stamp
        )
    return _count(status)
