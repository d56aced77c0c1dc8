"""Quota usage and per-user quota limits in the SQLite store.

The usage of every user (octets and messages over all of the user's mailboxes) lives
in `quota_usage`, kept by triggers (migration 0010) in the same transaction as every
insert, delete or move of a `messages` row: a delivery, APPEND, COPY, MOVE, EXPUNGE,
the deletion of a mailbox or a user, the removal of rows whose body was lost. Triggers
rather than code in each job, because the rows change in several modules and in two
kinds of process (a worker's writer and the committer); a trigger cannot be forgotten
by the next job that writes messages, and reading the usage is one row, not a sum.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from poczta.store.base import (
    QUOTA_RESOURCES,
    NotFound,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
    UserId,
)
from poczta.store.sqlite.writer import Job, JobContext

__all__ = ["messages_size", "quota_states", "set_quota_job"]

_STATES = (
    "SELECT u.user_id, u.storage, u.messages, l.storage, l.messages"
    " FROM quota_usage u LEFT JOIN quota_limits l ON l.user_id = u.user_id"
    " WHERE u.user_id IN (SELECT value FROM json_each(?))"
)


def quota_states(conn: sqlite3.Connection, user_ids: Sequence[int]) -> dict[UserId, QuotaState]:
    rows = conn.execute(_STATES, (json.dumps(list(user_ids)),))
    return {
        UserId(user_id): QuotaState(QuotaUsage(storage, messages), QuotaOverrides(limit, count))
        for user_id, storage, messages, limit, count in rows
    }


def messages_size(
    conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]
) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM messages"
        " WHERE mailbox_id = ? AND uid IN (SELECT value FROM json_each(?))",
        (mailbox_id, json.dumps(list(uids))),
    ).fetchone()
    return int(row[0]), int(row[1])


def set_quota_job(user_id: int, changes: Mapping[str, int | None]) -> Job:
    unknown = set(changes) - set(QUOTA_RESOURCES)
    if unknown:
        raise ValueError(f"unknown quota resources: {sorted(unknown)}")
    columns = [name for name in QUOTA_RESOURCES if name in changes]

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"no user {user_id}")
        conn.execute("INSERT OR IGNORE INTO quota_limits (user_id) VALUES (?)", (user_id,))
        for column in columns:  # names from QUOTA_RESOURCES only
            conn.execute(
                f"UPDATE quota_limits SET {column} = ? WHERE user_id = ?",
                (changes[column], user_id),
            )

    return job
