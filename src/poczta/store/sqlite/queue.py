"""The outbound queue in the SQLite store: entries, their recipients' states, and claims.

Plain synchronous functions on a connection: the `*_job` factories return writer jobs
(run inside the writer's batch transaction), the others read on a reader connection.

Times are stored as ISO 8601 text in UTC with microseconds (`queue_time`), so that the
SQL comparisons of due times and claims compare them correctly as text. A recipient's
result is only ever written while it is pending, so a late or repeated write can never
turn a delivered recipient back into a pending one. An entry holds one reference to its
body, released (`poczta.store.sqlite.blob_refs`) when the entry is finished or deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from poczta.store.base import (
    DELIVERED,
    FAILED,
    PENDING,
    NotFound,
    Outbound,
    QueueEntry,
    QueueId,
    QueueRecipient,
    RecipientAttempt,
    StoreError,
    normalize_address,
)
from poczta.store.codec import decode_time
from poczta.store.sqlite.blob_refs import add_blob_ref, release_blobs
from poczta.store.sqlite.writer import Job, JobContext

__all__ = [
    "bounce_job",
    "claim_holders",
    "claim_job",
    "delete_job",
    "enqueue_job",
    "finish_job",
    "flush_job",
    "get_entry",
    "hold_job",
    "insert_queue",
    "list_queue",
    "mark_reported_job",
    "next_due",
    "queue_time",
    "record_attempt_job",
    "release_claims_job",
    "release_claims_of_job",
    "renew_claims_job",
    "reschedule_job",
]

_ENTRY_COLUMNS = (
    "id, sender, digest, size, created, next_attempt, attempts, last_error, envid, ret,"
    " held, delay_warned, claimed_by, claimed_until"
)
_RECIPIENT_COLUMNS = (
    "queue_id, address, status, last_error, attempts, reply_code, reply_enhanced,"
    " remote_mta, tls, notify, orcpt, reported, last_attempt"
)


def queue_time(moment: datetime) -> str:
    """A time as the queue stores it: UTC, microseconds always written."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def insert_queue(
    conn: sqlite3.Connection, outbound: Outbound, digest: str, size: int, now: datetime
) -> QueueId:
    """Insert an entry (the caller has counted its reference to the body)."""
    stamp = queue_time(now)
    cursor = conn.execute(
        "INSERT INTO queue (sender, digest, size, created, next_attempt, envid, ret)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (outbound.sender, digest, size, stamp, stamp, outbound.envid, outbound.ret),
    )
    queue_id = cursor.lastrowid
    assert queue_id is not None
    rows: dict[str, tuple[str | None, str | None]] = {}
    for given in outbound.recipients:
        address = normalize_address(given)
        dsn = outbound.dsn.get(given) or outbound.dsn.get(address)
        notify = ",".join(dsn.notify) if dsn is not None and dsn.notify is not None else None
        rows.setdefault(address, (notify, dsn.orcpt if dsn is not None else None))
    conn.executemany(
        "INSERT INTO queue_recipients (queue_id, address, notify, orcpt) VALUES (?, ?, ?, ?)",
        [(queue_id, address, notify, orcpt) for address, (notify, orcpt) in rows.items()],
    )
    return QueueId(queue_id)


def enqueue_job(outbound: Outbound, digest: str, size: int, now: datetime) -> Job:
    if not outbound.recipients:
        raise StoreError("a queue entry needs at least one recipient")

    def job(conn: sqlite3.Connection, ctx: JobContext) -> QueueId:
        add_blob_ref(conn, ctx, digest, size, None, 1)
        return insert_queue(conn, outbound, digest, size, now)

    return job


# --- reading ---------------------------------------------------------------


def _recipient(row: tuple[object, ...]) -> QueueRecipient:
    _, address, status, error, attempts, code, enhanced, mta, tls, notify, orcpt, rep, last = row
    return QueueRecipient(
        address=str(address),
        status=str(status),
        last_error=None if error is None else str(error),
        attempts=int(attempts),  # type: ignore[call-overload]
        reply_code=None if code is None else int(code),  # type: ignore[call-overload]
        reply_enhanced=None if enhanced is None else str(enhanced),
        remote_mta=None if mta is None else str(mta),
        tls=None if tls is None else str(tls),
        notify=None if notify is None else tuple(filter(None, str(notify).split(","))),
        orcpt=None if orcpt is None else str(orcpt),
        reported=bool(rep),
        last_attempt=None if last is None else decode_time(str(last)),
    )


def _entry(row: tuple[object, ...], recipients: Sequence[QueueRecipient]) -> QueueEntry:
    ident, sender, digest, size, created, due, attempts, error, envid, ret = row[:10]
    held, warned, claimed_by, claimed_until = row[10:]
    return QueueEntry(
        id=QueueId(int(ident)),  # type: ignore[call-overload]
        sender=str(sender),
        recipients=tuple(recipients),
        digest=str(digest),
        size=int(size),  # type: ignore[call-overload]
        created=decode_time(str(created)),
        next_attempt=decode_time(str(due)),
        attempts=int(attempts),  # type: ignore[call-overload]
        last_error=None if error is None else str(error),
        envid=None if envid is None else str(envid),
        ret=None if ret is None else str(ret),
        held=bool(held),
        delay_warned=bool(warned),
        claimed_by=None if claimed_by is None else str(claimed_by),
        claimed_until=None if claimed_until is None else decode_time(str(claimed_until)),
    )


def _entries(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> list[QueueEntry]:
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM queue {where} ORDER BY next_attempt, id", params
    ).fetchall()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    recipients: dict[int, list[QueueRecipient]] = {}
    marks = ",".join("?" * len(ids))
    for row in conn.execute(
        f"SELECT {_RECIPIENT_COLUMNS} FROM queue_recipients WHERE queue_id IN ({marks})"
        " ORDER BY address",
        ids,
    ):
        recipients.setdefault(row[0], []).append(_recipient(row))
    return [_entry(row, recipients.get(row[0], ())) for row in rows]


def list_queue(conn: sqlite3.Connection) -> list[QueueEntry]:
    return _entries(conn, "", ())


def get_entry(conn: sqlite3.Connection, queue_id: int) -> QueueEntry:
    found = _entries(conn, "WHERE id = ?", (queue_id,))
    if not found:
        raise NotFound(f"no queue entry {queue_id}")
    return found[0]


def next_due(conn: sqlite3.Connection) -> datetime | None:
    """When the next entry may be claimed: a claimed one once its claim runs out."""
    row = conn.execute(
        "SELECT min(CASE WHEN claimed_until > next_attempt THEN claimed_until"
        " ELSE next_attempt END) FROM queue WHERE held = 0"
    ).fetchone()
    return None if row[0] is None else decode_time(str(row[0]))


# --- the runner's writes -----------------------------------------------------


def claim_job(owner: str, now: datetime, until: datetime, limit: int) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> list[QueueEntry]:
        stamp = queue_time(now)
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM queue WHERE held = 0 AND next_attempt <= ?"
                " AND (claimed_until IS NULL OR claimed_until < ?)"
                " ORDER BY next_attempt, id LIMIT ?",
                (stamp, stamp, limit),
            )
        ]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        conn.execute(
            f"UPDATE queue SET claimed_by = ?, claimed_until = ? WHERE id IN ({marks})",
            (owner, queue_time(until), *ids),
        )
        return _entries(conn, f"WHERE id IN ({marks})", ids)

    return job


def renew_claims_job(owner: str, until: datetime, ids: Sequence[int] | None = None) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        sql = "UPDATE queue SET claimed_until = ? WHERE claimed_by = ?"
        if ids is None:
            return conn.execute(sql, (queue_time(until), owner)).rowcount
        marks = ",".join("?" * len(ids))
        cursor = conn.execute(f"{sql} AND id IN ({marks})", (queue_time(until), owner, *ids))
        return cursor.rowcount

    return job


def release_claims_job(prefix: str, keep: str) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        cursor = conn.execute(
            "UPDATE queue SET claimed_by = NULL, claimed_until = NULL"
            " WHERE claimed_by IS NOT NULL AND substr(claimed_by, 1, ?) = ? AND claimed_by != ?",
            (len(prefix), prefix, keep),
        )
        return cursor.rowcount

    return job


def claim_holders(conn: sqlite3.Connection) -> list[str]:
    """The owners of the claims there are now, lasting or run out."""
    rows = conn.execute("SELECT DISTINCT claimed_by FROM queue WHERE claimed_by IS NOT NULL")
    return [str(row[0]) for row in rows]


def release_claims_of_job(owners: Sequence[str]) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        marks = ",".join("?" * len(owners))
        cursor = conn.execute(
            "UPDATE queue SET claimed_by = NULL, claimed_until = NULL"
            f" WHERE claimed_by IN ({marks})",
            tuple(owners),
        )
        return cursor.rowcount

    return job


def record_attempt_job(
    queue_id: int,
    results: Sequence[RecipientAttempt],
    now: datetime,
    finish: bool = False,
    owner: str | None = None,
) -> Job:
    """Results written only while `owner` (if given) claims the entry: the job answers
    None, and writes nothing, when another runner does or none does."""

    def job(conn: sqlite3.Connection, ctx: JobContext) -> bool | None:
        for status in {r.status for r in results} - {PENDING, DELIVERED, FAILED}:
            raise StoreError(f"unknown recipient status {status!r}")
        if owner is not None:
            row = conn.execute("SELECT claimed_by FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise NotFound(f"no queue entry {queue_id}")
            if row[0] != owner:
                return None
        stamp = queue_time(now)
        conn.executemany(
            "UPDATE queue_recipients SET status = ?, last_error = ?, reply_code = ?,"
            " reply_enhanced = ?, remote_mta = ?, tls = ?, attempts = attempts + 1,"
            " last_attempt = ? WHERE queue_id = ? AND address = ? AND status = 'pending'",
            [
                (
                    r.status,
                    r.text,
                    r.reply_code,
                    r.reply_enhanced,
                    r.remote_mta,
                    r.tls,
                    stamp,
                    queue_id,
                    normalize_address(r.address),
                )
                for r in results
            ],
        )
        return finish and _finish(conn, ctx, queue_id)

    return job


def reschedule_job(queue_id: int, owner: str, next_attempt: datetime, error: str | None) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        conn.execute(
            "UPDATE queue SET attempts = attempts + 1, next_attempt = ?, last_error = ?,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?",
            (queue_time(next_attempt), error, queue_id, owner),
        )

    return job


def mark_reported_job(queue_id: int, addresses: Sequence[str], delay_warning: bool) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        conn.executemany(
            "UPDATE queue_recipients SET reported = 1 WHERE queue_id = ? AND address = ?",
            [(queue_id, normalize_address(a)) for a in addresses],
        )
        if delay_warning:
            conn.execute("UPDATE queue SET delay_warned = 1 WHERE id = ?", (queue_id,))

    return job


def _remove(conn: sqlite3.Connection, ctx: JobContext, queue_id: int) -> bool:
    row = conn.execute("DELETE FROM queue WHERE id = ? RETURNING digest", (queue_id,)).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM queue_recipients WHERE queue_id = ?", (queue_id,))
    release_blobs(conn, ctx, [(str(row[0]), 1)])
    return True


def _finish(conn: sqlite3.Connection, ctx: JobContext, queue_id: int) -> bool:
    left = conn.execute(
        "SELECT 1 FROM queue_recipients WHERE queue_id = ? AND status = 'pending' LIMIT 1",
        (queue_id,),
    ).fetchone()
    return left is None and _remove(conn, ctx, queue_id)


def finish_job(queue_id: int) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> bool:
        return _finish(conn, ctx, queue_id)

    return job


def _require(conn: sqlite3.Connection, queue_id: int) -> None:
    if conn.execute("SELECT 1 FROM queue WHERE id = ?", (queue_id,)).fetchone() is None:
        raise NotFound(f"no queue entry {queue_id}")


def delete_job(queue_id: int) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if not _remove(conn, ctx, queue_id):
            raise NotFound(f"no queue entry {queue_id}")

    return job


def hold_job(queue_id: int, held: bool) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        _require(conn, queue_id)
        conn.execute("UPDATE queue SET held = ? WHERE id = ?", (int(held), queue_id))

    return job


def bounce_job(queue_id: int, text: str, now: datetime) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        _require(conn, queue_id)
        stamp = queue_time(now)
        conn.execute(
            "UPDATE queue_recipients SET status = 'failed', last_error = ?, reply_code = NULL,"
            " reply_enhanced = '5.0.0', remote_mta = NULL, last_attempt = ?"
            " WHERE queue_id = ? AND status = 'pending'",
            (text, stamp, queue_id),
        )
        conn.execute(
            "UPDATE queue SET held = 0, next_attempt = ?, last_error = ? WHERE id = ?",
            (stamp, text, queue_id),
        )

    return job


def flush_job(now: datetime, queue_id: int | None) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        stamp = queue_time(now)
        if queue_id is not None:
            _require(conn, queue_id)
            cursor = conn.execute(
                "UPDATE queue SET next_attempt = ? WHERE id = ? AND held = 0", (stamp, queue_id)
            )
        else:
            cursor = conn.execute(
                "UPDATE queue SET next_attempt = ? WHERE held = 0 AND next_attempt > ?",
                (stamp, stamp),
            )
        return cursor.rowcount

    return job
