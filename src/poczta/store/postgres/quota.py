"""Quota usage and per-user quota limits in the PostgreSQL store.

The usage of every user lives in `quota_usage`, kept by the schema's triggers in the
transaction of every change of `messages` (see migration 0001), whoever makes it:
reading it is one row per user, and no write here can forget it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from poczta.store.base import (
    QUOTA_RESOURCES,
    NotFound,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
    UserId,
)
from poczta.store.postgres.access import Connection, equals_any

__all__ = ["check_quota_changes", "messages_size", "quota_states", "set_quota"]

_QUOTA_STATES = (
    "SELECT u.user_id, u.storage, u.messages, l.storage, l.messages"
    " FROM quota_usage u LEFT JOIN quota_limits l ON l.user_id = u.user_id"
)


async def quota_states(conn: Connection, user_ids: Sequence[int]) -> dict[UserId, QuotaState]:
    chosen, argument = equals_any("u.user_id", user_ids, 1, "bigint")
    rows = await conn.fetch(f"{_QUOTA_STATES} WHERE {chosen}", argument)
    return {
        UserId(user_id): QuotaState(QuotaUsage(storage, messages), QuotaOverrides(limit, count))
        for user_id, storage, messages, limit, count in rows
    }


async def messages_size(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*), coalesce(sum(size), 0) FROM messages"
        " WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])",
        mailbox_id,
        list(uids),
    )
    return int(row[0]), int(row[1])


def check_quota_changes(changes: Mapping[str, int | None]) -> None:
    unknown = set(changes) - set(QUOTA_RESOURCES)
    if unknown:
        raise ValueError(f"unknown quota resources: {sorted(unknown)}")


async def set_quota(conn: Connection, user_id: int, changes: Mapping[str, int | None]) -> None:
    check_quota_changes(changes)
    if await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR SHARE", user_id) is None:
        raise NotFound(f"no user {user_id}")
    await conn.execute(
        "INSERT INTO quota_limits (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
    )
    for column in QUOTA_RESOURCES:  # names from QUOTA_RESOURCES only
        if column in changes:
            await conn.execute(
                f"UPDATE quota_limits SET {column} = $1 WHERE user_id = $2",
                changes[column],
                user_id,
            )
