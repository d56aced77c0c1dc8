"""Sending-limit overrides and usage counts in the SQLite database: `SqliteSendingStore`.

A `SideStore`, like the greylist's: its own connection and thread, so every worker
process counts in the same tables and the event loop never waits on SQLite. Counting a
message is one small transaction: an upsert of the user's row for the current minute,
and the removal of that user's rows older than a day (usually none, always in the same
index range). With ``synchronous=NORMAL`` a crash can forget the last counts, which
lets a user send a few messages more, never fewer. The tables come from migration 0008.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from poczta.sending_limits import (
    DAY_MINUTES,
    HOUR_MINUTES,
    LIMIT_NAMES,
    LimitOverrides,
    SendingState,
    SendingUsage,
)
from poczta.store.base import NotFound, normalize_address
from poczta.store.sqlite.side import SideStore

__all__ = ["SqliteSendingStore"]

_STATE = (
    "SELECT u.id, l.messages_per_hour, l.recipients_per_message, l.recipients_per_day,"
    " (SELECT coalesce(sum(messages), 0) FROM sending_usage"
    "   WHERE user_id = u.id AND minute > ?),"
    " (SELECT coalesce(sum(recipients), 0) FROM sending_usage"
    "   WHERE user_id = u.id AND minute > ?)"
    " FROM users u LEFT JOIN sending_limits l ON l.user_id = u.id WHERE u.address = ?"
)
_COUNT = (
    "INSERT INTO sending_usage (user_id, minute, messages, recipients)"
    " SELECT id, ?, 1, ? FROM users WHERE address = ?"
    " ON CONFLICT (user_id, minute) DO UPDATE"
    " SET messages = messages + 1, recipients = recipients + excluded.recipients"
)
_PRUNE = (
    "DELETE FROM sending_usage"
    " WHERE user_id = (SELECT id FROM users WHERE address = ?) AND minute <= ?"
)


class SqliteSendingStore(SideStore):
    """`SendingStore` on the SQLite database at `db_path`; create it with `open`."""

    thread_name = "poczta-sending"
    what = "sending-limit store"

    async def sending_state(self, user: str, now: float) -> SendingState:
        minute = int(now // 60)
        key = (minute - HOUR_MINUTES, minute - DAY_MINUTES, normalize_address(user))
        row = await self._run(lambda c: c.execute(_STATE, key).fetchone())
        if row is None:
            return SendingState(LimitOverrides(), SendingUsage())
        overrides = LimitOverrides(*row[1:4])
        return SendingState(overrides, SendingUsage(int(row[4]), int(row[5])))

    async def record_sent(self, user: str, recipients: int, now: float) -> None:
        minute, address = int(now // 60), normalize_address(user)

        def count(conn: sqlite3.Connection) -> None:
            conn.execute(_COUNT, (minute, recipients, address))
            conn.execute(_PRUNE, (address, minute - DAY_MINUTES))

        await self._transaction(count)

    async def set_overrides(self, user: str, changes: Mapping[str, int | None]) -> None:
        """Set some of `user`'s own limits (None: back to the default); NotFound when there
        is no such user."""
        unknown = set(changes) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"unknown sending limits: {sorted(unknown)}")
        address = normalize_address(user)
        columns = [name for name in LIMIT_NAMES if name in changes]

        def update(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM users WHERE address = ?", (address,)).fetchone()
            if row is None:
                raise NotFound(f"no user {address}")
            conn.execute("INSERT OR IGNORE INTO sending_limits (user_id) VALUES (?)", row)
            for column in columns:  # names from LIMIT_NAMES only
                conn.execute(
                    f"UPDATE sending_limits SET {column} = ? WHERE user_id = ?",
                    (changes[column], row[0]),
                )

        await self._transaction(update)
