"""Quota usage: the per-user counters equal the true sums after any mix of changes; limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from poczta.message import parse_message
from poczta.store import DeliveryTarget, FlagMode, MailboxState, MailStore, NotFound, UserId
from poczta.store.base import QuotaOverrides, QuotaUsage
from poczta.store.sqlite.migrate import migrate
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import WHEN, Backend, make_message, with_user

T = TypeVar("T")
ADDRESSES = ("ann@example.com", "ben@example.com", "cid@example.org")
MAILBOXES = ("INBOX", "Archive", "Work", "Work/Old")


async def true_usage(store: MailStore, user: UserId) -> QuotaUsage:
    """What the user's messages take, summed from every mailbox's listing."""
    storage = messages = 0
    for box in await store.list_mailboxes(user):
        summaries = await store.fetch_summaries(box.id)
        storage += sum(s.size for s in summaries)
        messages += len(summaries)
    return QuotaUsage(storage, messages)


async def usage_of(store: MailStore, user: UserId) -> QuotaUsage:
    return (await store.quota_states([user]))[user].usage


def test_usage_follows_delivery_copy_move_and_expunge(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        ann, ben = await with_user(store, ADDRESSES[0]), await with_user(store, ADDRESSES[1])
        assert await usage_of(store, ann) == QuotaUsage(0, 0)
        small, large = make_message(1), make_message(2, size=5000)
        both = [DeliveryTarget(ann), DeliveryTarget(ben, "Archive")]
        await store.deliver(small, parse_message(small), WHEN, both)
        [big] = await store.deliver(large, parse_message(large), WHEN, [DeliveryTarget(ann)])
        assert await usage_of(store, ann) == QuotaUsage(len(small) + len(large), 2)
        assert await usage_of(store, ben) == QuotaUsage(len(small), 1)
        inbox = await store.get_mailbox(ann, "INBOX")
        assert await store.messages_size(inbox.id, [big.uid, 999]) == (1, len(large))
        await store.copy_messages(ann, inbox.id, [big.uid], "Archive")
        assert await usage_of(store, ann) == QuotaUsage(len(small) + 2 * len(large), 3)
        await store.copy_messages(ann, inbox.id, [big.uid], "Trash", move=True)
        assert await usage_of(store, ann) == QuotaUsage(len(small) + 2 * len(large), 3)
        await store.delete_mailbox(ann, "Archive")
        assert await usage_of(store, ann) == QuotaUsage(len(small) + len(large), 2)
        await store.expunge(inbox.id)  # nothing is \Deleted
        assert await usage_of(store, ann) == QuotaUsage(len(small) + len(large), 2)
        await store.expunge(inbox.id, [(await store.fetch_summaries(inbox.id))[0].uid])
        assert await usage_of(store, ann) == QuotaUsage(len(large), 1)
        await store.remove_user(ADDRESSES[0])
        assert await store.quota_states([ann, ben]) == {ben: (await store.quota_states([ben]))[ben]}

    backend.run(body)


def test_own_limits_are_set_and_cleared(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        ann = await with_user(store, ADDRESSES[0])
        assert (await store.quota_states([ann]))[ann].overrides == QuotaOverrides()
        await store.set_quota(ann, {"storage": 500 * 1024 * 1024})
        await store.set_quota(ann, {"messages": 10})
        state = (await store.quota_states([ann]))[ann]
        assert state.overrides == QuotaOverrides(500 * 1024 * 1024, 10)
        await store.set_quota(ann, {"storage": None})
        assert (await store.quota_states([ann]))[ann].overrides == QuotaOverrides(None, 10)
        with pytest.raises(NotFound):
            await store.set_quota(UserId(ann + 100), {"storage": 1})
        with pytest.raises(ValueError, match="unknown"):
            await store.set_quota(ann, {"bytes": 1})

    backend.run(body)


def test_migration_counts_the_messages_already_stored(tmp_path: Path) -> None:
    async def fill() -> tuple[UserId, int]:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store, ADDRESSES[0])
            total = 0
            for n, box in enumerate(("INBOX", "Archive", "INBOX")):
                data = make_message(n, size=1000 * (n + 1))
                await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user, box)])
                total += len(data)
            return user, total
        finally:
            await store.close()

    user, total = asyncio.run(fill())
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    (version,) = conn.execute(
        "SELECT version FROM schema_version WHERE name = '0010_quota.sql'"
    ).fetchone()
    # the database as an older poczta left it: messages, no quota tables
    conn.executescript(
        "DROP TRIGGER quota_user_added; DROP TRIGGER quota_message_added;"
        " DROP TRIGGER quota_message_removed; DROP TRIGGER quota_message_changed;"
        " DROP TRIGGER quota_mailbox_removed; DROP TABLE quota_usage; DROP TABLE quota_limits;"
        f" DELETE FROM schema_version WHERE version = {version};"
    )
    assert migrate(conn) == [version]
    conn.close()

    async def check() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            assert await usage_of(store, user) == QuotaUsage(total, 3)
        finally:
            await store.close()

    asyncio.run(check())


# Hundreds of commits: on a memory filesystem when there is one, since each flush to a
# disk costs milliseconds and what is checked here is the counting, not durability.
_MEMORY_FS = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class QuotaMachine(RuleBasedStateMachine):
    """Random deliveries, APPENDs, copies, moves, expunges and removals of mailboxes and
    users; after each step every user's counter equals the sum of its messages."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="poczta-quota-", dir=_MEMORY_FS))
        self.loop = asyncio.new_event_loop()
        self.store: MailStore = self.run(SqliteStore.open(self.root / "m.db", self.root / "b"))
        self.users: dict[str, UserId] = {}
        self.counter = 0

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _mailbox(self, user: UserId, name: str) -> MailboxState | None:
        try:
            return self.run(self.store.get_mailbox(user, name))
        except NotFound:
            return None

    @rule(address=st.sampled_from(ADDRESSES))
    def add_user(self, address: str) -> None:
        if address not in self.users:
            self.users[address] = self.run(with_user(self.store, address))

    @precondition(lambda self: self.users)
    @rule(data=st.data())
    def remove_user(self, data: st.DataObject) -> None:
        address = data.draw(st.sampled_from(sorted(self.users)))
        self.run(self.store.remove_user(address))
        del self.users[address]

    @precondition(lambda self: self.users)
    @rule(data=st.data(), size=st.integers(0, 20_000), same=st.booleans())
    def deliver(self, data: st.DataObject, size: int, same: bool) -> None:
        """A delivery to some users (one body, many rows) or an APPEND to any mailbox."""
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.users)), min_size=1, max_size=3))
        name = data.draw(st.sampled_from(MAILBOXES))
        self.counter += 0 if same else 1
        message = make_message(self.counter, size=size)
        targets = [DeliveryTarget(self.users[a], name) for a in dict.fromkeys(chosen)]
        with contextlib.suppress(NotFound):  # a mailbox is gone: nothing changes
            self.run(self.store.deliver(message, parse_message(message), WHEN, targets))

    @precondition(lambda self: self.users)
    @rule(data=st.data())
    def create_mailbox(self, data: st.DataObject) -> None:
        user = self.users[data.draw(st.sampled_from(sorted(self.users)))]
        name = data.draw(st.sampled_from(MAILBOXES[1:]))
        if self._mailbox(user, name) is None:
            self.run(self.store.create_mailbox(user, name))

    @precondition(lambda self: self.users)
    @rule(data=st.data())
    def delete_mailbox(self, data: st.DataObject) -> None:
        user = self.users[data.draw(st.sampled_from(sorted(self.users)))]
        name = data.draw(st.sampled_from(MAILBOXES[1:]))
        if self._mailbox(user, name) is not None:
            self.run(self.store.delete_mailbox(user, name))

    def _some_uids(self, data: st.DataObject) -> tuple[UserId, MailboxState, list[int]] | None:
        user = self.users[data.draw(st.sampled_from(sorted(self.users)))]
        box = self._mailbox(user, data.draw(st.sampled_from(MAILBOXES)))
        if box is None:
            return None
        uids = [s.uid for s in self.run(self.store.fetch_summaries(box.id))]
        if not uids:
            return None
        return user, box, data.draw(st.lists(st.sampled_from(uids), min_size=1, unique=True))

    @precondition(lambda self: self.users)
    @rule(data=st.data(), move=st.booleans())
    def copy(self, data: st.DataObject, move: bool) -> None:
        found = self._some_uids(data)
        if found is None:
            return
        user, box, uids = found
        target = data.draw(st.sampled_from(MAILBOXES))
        with contextlib.suppress(NotFound):  # a mailbox is gone: nothing changes
            self.run(self.store.copy_messages(user, box.id, uids, target, move=move))

    @precondition(lambda self: self.users)
    @rule(data=st.data())
    def move_one(self, data: st.DataObject) -> None:
        found = self._some_uids(data)
        if found is None:
            return
        user, box, uids = found
        target = data.draw(st.sampled_from(MAILBOXES))
        with contextlib.suppress(NotFound):  # a mailbox is gone: nothing changes
            self.run(self.store.move_message(user, box.name, uids[0], target))

    @precondition(lambda self: self.users)
    @rule(data=st.data(), flagged_only=st.booleans())
    def expunge(self, data: st.DataObject, flagged_only: bool) -> None:
        found = self._some_uids(data)
        if found is None:
            return
        _, box, uids = found
        if flagged_only:  # EXPUNGE of the \Deleted ones
            self.run(self.store.set_flags(box.id, uids, ["\\Deleted"], FlagMode.ADD))
            self.run(self.store.expunge(box.id))
        else:  # UID EXPUNGE
            self.run(self.store.expunge(box.id, uids))

    @invariant()
    def counters_equal_the_sums(self) -> None:
        states = self.run(self.store.quota_states(list(self.users.values())))
        assert set(states) == set(self.users.values())
        for user in self.users.values():
            expected = self.run(true_usage(self.store, user))
            assert states[user].usage == expected


def test_usage_counters_equal_the_sums() -> None:
    run_state_machine_as_test(
        QuotaMachine,
        settings=settings(
            max_examples=10,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
