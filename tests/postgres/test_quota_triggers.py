"""The counting triggers of the PostgreSQL schema: whatever SQL changes `messages`, each
user's `quota_usage` row is the sum of the user's messages, and each mailbox's `messages`
the number of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from poczta.store.postgres.migrate import migrate
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import connect

T = TypeVar("T")
DIGEST = "a" * 64
SIZES = st.integers(min_value=0, max_value=10_000)

_INSERT = (
    "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, digest, header_size,"
    " envelope, headers)"
    " SELECT m, u, 1, now(), s, $4, 0, '[]', '[]'"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(m, u, s)"
)
_COPY = (
    "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, digest, header_size,"
    " envelope, headers)"
    " SELECT $1, u.new_uid, 1, m.internal_date, m.size, m.digest, 0, m.envelope, m.headers"
    " FROM messages m JOIN unnest($2::bigint[], $3::bigint[]) AS u(old_uid, new_uid)"
    " ON m.uid = u.old_uid"
)
# Each user's usage row beside the sums counted from its messages, in one query.
_USAGE_AND_SUMS = (
    "SELECT q.user_id, q.storage, q.messages, s.storage, s.messages"
    " FROM quota_usage q LEFT JOIN ("
    "   SELECT b.user_id, coalesce(sum(m.size), 0) AS storage, count(m.uid) AS messages"
    "   FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id GROUP BY b.user_id"
    " ) s USING (user_id)"
)


class QuotaTriggerMachine(RuleBasedStateMachine):
    """Users, mailboxes and messages changed by plain SQL: multi-row deliveries, copies,
    expunges, moves, size and flag changes, mailbox and user deletion. A model keeps what
    should be there; after each step every user's usage row equals the model's sums, and
    so do the sums counted from `messages`."""

    conn: asyncpg.Connection
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.run(
            self.conn.execute(
                "DELETE FROM users;"  # and by cascade everything the rules make
                "INSERT INTO domains (name) VALUES ('example.test') ON CONFLICT DO NOTHING;"
                f"INSERT INTO blobs (digest, size, refs) VALUES ('{DIGEST}', 1, 1)"
                " ON CONFLICT DO NOTHING;"
            )
        )
        self.users: set[int] = set()
        self.mailboxes: dict[int, int] = {}  # mailbox → user
        self.messages: dict[int, tuple[int, int]] = {}  # uid (unique here) → (mailbox, size)
        self.next_uid = 1
        self.made = 0  # users and mailboxes, for unique names

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def _uids(self, count: int) -> list[int]:
        first, self.next_uid = self.next_uid, self.next_uid + count
        return list(range(first, first + count))

    @initialize()
    def two_users_with_two_mailboxes_each(self) -> None:
        for _ in range(2):
            user = self._add_user()
            self._add_mailbox(user)
            self._add_mailbox(user)

    @rule()
    def add_user(self) -> None:
        self._add_user()

    @precondition(lambda self: bool(self.users))
    @rule(data=st.data())
    def add_mailbox(self, data: st.DataObject) -> None:
        self._add_mailbox(data.draw(st.sampled_from(sorted(self.users))))

    def _add_user(self) -> int:
        self.made += 1
        user = self.run(
            self.conn.fetchval(
                "INSERT INTO users (address, domain, password_hash, scram)"
                " VALUES ($1, 'example.test', '', '') RETURNING id",
                f"u{self.made}@example.test",
            )
        )
        self.users.add(int(user))
        return int(user)

    def _add_mailbox(self, user: int) -> None:
        self.made += 1
        box = self.run(
            self.conn.fetchval(
                "INSERT INTO mailboxes (user_id, name, uidvalidity)"
                " VALUES ($1, $2, next_uidvalidity()) RETURNING id",
                user,
                f"box{self.made}",
            )
        )
        self.mailboxes[int(box)] = user

    @precondition(lambda self: bool(self.mailboxes))
    @rule(data=st.data(), sizes=st.lists(SIZES, min_size=1, max_size=6))
    def deliver(self, data: st.DataObject, sizes: list[int]) -> None:
        """One statement storing messages in several mailboxes, of several users."""
        boxes = [data.draw(st.sampled_from(sorted(self.mailboxes))) for _ in sizes]
        uids = self._uids(len(sizes))
        self.run(self.conn.execute(_INSERT, boxes, uids, sizes, DIGEST))
        for box, uid, size in zip(boxes, uids, sizes, strict=True):
            self.messages[uid] = (box, size)

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data())
    def copy(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(self.messages)), min_size=1, unique=True)
        )
        target = data.draw(st.sampled_from(sorted(self.mailboxes)))
        new = self._uids(len(chosen))
        self.run(self.conn.execute(_COPY, target, chosen, new))
        for old, uid in zip(chosen, new, strict=True):
            self.messages[uid] = (target, self.messages[old][1])

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data())
    def expunge(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(self.messages)), min_size=1, unique=True)
        )
        self.run(self.conn.execute("DELETE FROM messages WHERE uid = ANY($1::bigint[])", chosen))
        for uid in chosen:
            del self.messages[uid]

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(self.messages)), min_size=1, unique=True)
        )
        target = data.draw(st.sampled_from(sorted(self.mailboxes)))
        self.run(
            self.conn.execute(
                "UPDATE messages SET mailbox_id = $1 WHERE uid = ANY($2::bigint[])", target, chosen
            )
        )
        for uid in chosen:
            self.messages[uid] = (target, self.messages[uid][1])

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data(), size=SIZES)
    def resize(self, data: st.DataObject, size: int) -> None:
        uid = data.draw(st.sampled_from(sorted(self.messages)))
        self.run(self.conn.execute("UPDATE messages SET size = $1 WHERE uid = $2", size, uid))
        self.messages[uid] = (self.messages[uid][0], size)

    @precondition(lambda self: bool(self.messages))
    @rule()
    def flag_everything(self) -> None:
        self.run(self.conn.execute("UPDATE messages SET flags = flags || '\\Seen'::text"))

    @precondition(lambda self: bool(self.mailboxes))
    @rule(data=st.data())
    def delete_mailbox(self, data: st.DataObject) -> None:
        box = data.draw(st.sampled_from(sorted(self.mailboxes)))
        self.run(self.conn.execute("DELETE FROM mailboxes WHERE id = $1", box))
        self._forget(box)

    @precondition(lambda self: bool(self.users))
    @rule(data=st.data())
    def delete_user(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.users)))
        self.run(self.conn.execute("DELETE FROM users WHERE id = $1", user))
        self.users.discard(user)
        for box in [b for b, owner in self.mailboxes.items() if owner == user]:
            self._forget(box)

    def _forget(self, box: int) -> None:
        del self.mailboxes[box]
        for uid in [u for u, (b, _) in self.messages.items() if b == box]:
            del self.messages[uid]

    def _expected(self) -> dict[int, tuple[int, int]]:
        sums = {user: (0, 0) for user in self.users}
        for box, size in self.messages.values():
            storage, count = sums[self.mailboxes[box]]
            sums[self.mailboxes[box]] = (storage + size, count + 1)
        return sums

    @invariant()
    def usage_is_the_sum_of_the_messages(self) -> None:
        rows = self.run(self.conn.fetch(_USAGE_AND_SUMS))
        usage = {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
        counted = {int(r[0]): (int(r[3]), int(r[4])) for r in rows if r[3] is not None}
        expected = self._expected()
        assert usage == expected
        assert counted == {user: sums for user, sums in expected.items() if user in counted}

    @invariant()
    def each_mailbox_counts_its_messages(self) -> None:
        rows = self.run(self.conn.fetch("SELECT id, messages FROM mailboxes"))
        expected = {box: 0 for box in self.mailboxes}
        for box, _ in self.messages.values():
            expected[box] += 1
        assert {int(r[0]): int(r[1]) for r in rows} == expected


def test_quota_usage_follows_every_change_of_messages(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    loop = asyncio.new_event_loop()

    async def opened() -> Any:
        conn = await connect(postgres, postgres_dsn)
        await migrate(conn)
        await conn.execute("SET synchronous_commit TO off")  # triggers, not durability, here
        return conn

    conn = loop.run_until_complete(opened())
    QuotaTriggerMachine.conn, QuotaTriggerMachine.loop = conn, loop
    try:
        run_state_machine_as_test(
            QuotaTriggerMachine,
            settings=settings(
                max_examples=30,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
