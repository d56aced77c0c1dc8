"""Contract tests of mailboxes and messages: UIDs, MODSEQ, flags, expunge, cached parse."""

from __future__ import annotations

import time

import pytest

from poczta.message import parse_message
from poczta.store import (
    AlreadyExists,
    DeliveryTarget,
    FlagMode,
    MailboxId,
    MailStore,
    NotFound,
    StoreError,
    UserId,
)
from tests.store.store_helpers import LATER, WHEN, Backend, deliver_one, make_message, with_user


def test_mailbox_lifecycle(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        created = await store.create_mailbox(user, "Projects/2024/Q1")
        assert created.name == "Projects/2024/Q1" and created.uidnext == 1
        names = {b.name for b in await store.list_mailboxes(user)}
        assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= names
        with pytest.raises(AlreadyExists):
            await store.create_mailbox(user, "Projects")
        inbox = await store.get_mailbox(user, "inbox")
        assert inbox.name == "INBOX"
        await deliver_one(store, user, 1, "Projects/2024")
        await store.rename_mailbox(user, "Projects", "Work")
        names = {b.name for b in await store.list_mailboxes(user)}
        assert {"Work", "Work/2024", "Work/2024/Q1"} <= names and "Projects" not in names
        moved = await store.get_mailbox(user, "Work/2024")
        assert moved.messages == 1
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(user, "Work", "Sent")
        with pytest.raises(StoreError):
            await store.delete_mailbox(user, "INBOX")
        await store.delete_mailbox(user, "Work/2024")
        with pytest.raises(NotFound):
            await store.get_mailbox(user, "Work/2024")
        with pytest.raises(NotFound):
            await store.delete_mailbox(user, "Work/2024")
        again = await store.create_mailbox(user, "Work/2024")
        assert again.uidvalidity > moved.uidvalidity and again.uidnext == 1

    backend.run(body)


async def _names(store: MailStore, user: UserId) -> dict[str, tuple[int, int]]:
    """Each of the user's mailboxes by name: (UIDVALIDITY, messages)."""
    return {b.name: (b.uidvalidity, b.messages) for b in await store.list_mailboxes(user)}


async def _orphan(store: MailStore, user: UserId, name: str) -> None:
    """Make mailbox `name` ("B/x") without its parent ("B"), as deleting a parent leaves it."""
    await store.create_mailbox(user, name)
    await store.delete_mailbox(user, name.rpartition("/")[0])


def test_a_rename_onto_a_name_whose_orphan_child_exists_adopts_it(backend: Backend) -> None:
    """RFC 9051 6.3.6: "B" does not exist, so RENAME A B succeeds; "B/x", which was there
    without a parent, stays and is now a child of the renamed mailbox beside A's own."""

    async def body(store: MailStore) -> None:
        user = await with_user(store)
        await _orphan(store, user, "B/x")
        await deliver_one(store, user, 1, "B/x")
        await store.create_mailbox(user, "A/y")
        await deliver_one(store, user, 2, "A/y")
        before = await _names(store, user)
        await store.rename_mailbox(user, "A", "B")
        after = await _names(store, user)
        assert {"A", "A/y"}.isdisjoint(after)
        assert after["B"] == before["A"] and after["B/y"] == before["A/y"]
        assert after["B/x"] == before["B/x"] == (before["B/x"][0], 1)

    backend.run(body)


def test_a_rename_whose_child_would_take_an_existing_name_fails_and_changes_nothing(
    backend: Backend,
) -> None:
    """A/x would become B/x, which exists (an orphan): AlreadyExists, every mailbox as it was."""

    async def body(store: MailStore) -> None:
        user = await with_user(store)
        await _orphan(store, user, "B/x")
        await store.create_mailbox(user, "A/x")
        await deliver_one(store, user, 1, "A/x")
        before = await _names(store, user)
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(user, "A", "B")
        assert await _names(store, user) == before
        await store.rename_mailbox(user, "A", "C")  # the store is still usable
        assert {"C", "C/x", "B/x"} <= set(await _names(store, user))

    backend.run(body)


@pytest.mark.parametrize(
    ("old", "new", "renamed", "made"),
    [
        ("P/Q", "P", {"P/Q": "P", "P/Q/Q": "P/Q", "P/Q/Q/Q": "P/Q/Q"}, set()),  # a superior
        ("P", "P/Q", {"P": "P/Q", "P/Q/Q": "P/Q/Q/Q", "P/Q/Q/Q": "P/Q/Q/Q/Q"}, {"P"}),
    ],
)
def test_a_rename_within_its_own_hierarchy_moves_every_inferior(
    backend: Backend, old: str, new: str, renamed: dict[str, str], made: set[str]
) -> None:
    """Renamed names that are the old names of others (P/Q/Q becomes P/Q while P/Q
    becomes P) never collide midway, whatever order the rows are taken in. P renamed to
    P/Q leaves P/Q without its superior P, which the rename then makes anew, empty."""

    async def body(store: MailStore) -> None:
        user = await with_user(store)
        await store.create_mailbox(user, "P/Q/Q/Q")
        await store.delete_mailbox(user, new)  # "P" or "P/Q": the new name is free
        before = await _names(store, user)
        others = {name: box for name, box in before.items() if not name.startswith("P")}
        assert set(before) - set(others) == set(renamed)
        await store.rename_mailbox(user, old, new)
        after = await _names(store, user)
        moved = {renamed[name]: before[name] for name in renamed}
        assert {name: box for name, box in after.items() if name not in made} == others | moved
        assert all(after[name][1] == 0 and after[name] not in before.values() for name in made)

    backend.run(body)


def test_a_rename_creates_the_missing_superiors_of_the_new_name(backend: Backend) -> None:
    """RFC 9051 6.3.6: RENAME A x/y/z makes x and x/y, as CREATE x/y/z would, so the
    renamed mailbox is no orphan; a superior that exists is left as it is."""

    async def body(store: MailStore) -> None:
        user = await with_user(store)
        await store.create_mailbox(user, "A/child")
        await deliver_one(store, user, 1, "A")
        await store.create_mailbox(user, "x")
        await deliver_one(store, user, 2, "x")
        before = await _names(store, user)
        await store.rename_mailbox(user, "A", "x/y/z")
        after = await _names(store, user)
        assert {"A", "A/child"}.isdisjoint(after)
        assert after["x/y/z"] == before["A"] and after["x/y/z/child"] == before["A/child"]
        assert after["x"] == before["x"]  # there already: kept, messages and all
        assert after["x/y"][1] == 0 and after["x/y"][0] not in {v[0] for v in before.values()}

    backend.run(body)


def test_deliver_and_fetch(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        data = make_message(7)
        parsed = parse_message(data)
        targets = [
            DeliveryTarget(user),
            DeliveryTarget(user, "\\Junk", frozenset({"\\seen", "$Junk"})),
        ]
        done = await store.deliver(data, parsed, WHEN, targets)
        inbox = await store.get_mailbox(user, "INBOX")
        junk = await store.get_mailbox(user, "Junk")
        assert [(d.mailbox_id, d.uid) for d in done] == [(inbox.id, 1), (junk.id, 1)]
        assert (inbox.uidnext, inbox.messages) == (2, 1)
        [meta] = await store.fetch_meta(junk.id)
        assert meta.uid == 1 and meta.flags == frozenset({"\\Seen", "$Junk"})
        assert meta.internal_date == WHEN and meta.size == len(data)
        assert meta.subject == "Hello 7" and meta.envelope == parsed.envelope
        assert meta.sent_date == parsed.date and meta.header_size == parsed.header_size
        assert ("subject", "Hello 7") in meta.search_headers
        assert meta.modseq <= junk.highestmodseq
        assert await store.read_message(inbox.id, 1) == data
        assert await store.blobs.read(meta.digest) == data
        assert await store.blobs.read(meta.digest, size_hint=meta.size) == data  # inline read
        with pytest.raises(NotFound):
            await store.read_message(inbox.id, 99)
        with pytest.raises(NotFound):
            await store.deliver(data, parsed, WHEN, [DeliveryTarget(user, "Nope")])

    backend.run(body)


def test_a_one_target_delivery_finds_its_mailbox_by_special_use_then_by_name(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        data = make_message(8)
        parsed = parse_message(data)
        await store.rename_mailbox(user, "Junk", "Spam")
        [to_junk] = await store.deliver(data, parsed, WHEN, [DeliveryTarget(user, "\\Junk")])
        assert to_junk.mailbox_id == (await store.get_mailbox(user, "Spam")).id
        [by_name] = await store.deliver(data, parsed, WHEN, [DeliveryTarget(user, "Spam")])
        assert (by_name.mailbox_id, by_name.uid) == (to_junk.mailbox_id, to_junk.uid + 1)
        await store.delete_mailbox(user, "Spam")
        [fallback] = await store.deliver(data, parsed, WHEN, [DeliveryTarget(user, "\\Junk")])
        assert fallback.mailbox_id == (await store.get_mailbox(user, "INBOX")).id

    backend.run(body)


def test_fetch_meta_selected_uids(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        for n in range(5):
            await deliver_one(store, user, n)
        inbox = await store.get_mailbox(user, "INBOX")
        assert [m.uid for m in await store.fetch_meta(inbox.id, [4, 2, 99])] == [2, 4]
        # UIDs close together (read as a range): only those asked, those that exist.
        assert [m.uid for m in await store.fetch_meta(inbox.id, [4, 1, 3])] == [1, 3, 4]
        assert [m.uid for m in await store.fetch_meta(inbox.id, [5, 6, 4])] == [4, 5]
        assert [m.uid for m in await store.fetch_meta(inbox.id)] == [1, 2, 3, 4, 5]
        assert await store.fetch_meta(inbox.id, []) == []
        with pytest.raises(NotFound):
            await store.fetch_meta(MailboxId(inbox.id + 1000))

    backend.run(body)


def test_fetch_summaries_agree_with_meta(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        for n in range(3):
            await deliver_one(store, user, n)
        inbox = await store.get_mailbox(user, "INBOX")
        await store.expunge(inbox.id, [2])
        summaries = await store.fetch_summaries(inbox.id)
        metas = await store.fetch_meta(inbox.id)
        assert [(s.uid, s.size, s.digest) for s in summaries] == [
            (m.uid, m.size, m.digest) for m in metas
        ]
        assert [s.uid for s in summaries] == [1, 3]
        assert summaries[0].size == len(await store.read_message(inbox.id, 1))
        with pytest.raises(NotFound):
            await store.fetch_summaries(MailboxId(inbox.id + 1000))

    backend.run(body)


def test_flags_and_modseq(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        for n in range(3):
            await deliver_one(store, user, n)
        box = await store.get_mailbox(user, "INBOX")
        start = box.highestmodseq
        added = await store.set_flags(box.id, [1, 2], ["\\SEEN", "work"], FlagMode.ADD)
        assert [(u, f) for u, f, _ in added.changed] == [
            (1, frozenset({"\\Seen", "work"})),
            (2, frozenset({"\\Seen", "work"})),
        ]
        assert added.highestmodseq > start and all(
            m == added.highestmodseq for *_, m in added.changed
        )
        same = await store.set_flags(box.id, [1], ["\\Seen"], FlagMode.ADD)
        assert same.changed == () and same.highestmodseq == added.highestmodseq
        removed = await store.set_flags(box.id, [1, 3], ["work"], FlagMode.REMOVE)
        assert [u for u, *_ in removed.changed] == [1]
        replaced = await store.set_flags(box.id, [3], ["\\Flagged"], FlagMode.REPLACE)
        assert replaced.changed[0][1] == frozenset({"\\Flagged"})
        # UNCHANGEDSINCE: message 3 changed after `added`, so it is refused
        guarded = await store.set_flags(
            box.id, [2, 3], ["\\Answered"], FlagMode.ADD, unchangedsince=added.highestmodseq
        )
        assert [u for u, *_ in guarded.changed] == [2] and guarded.modified == (3,)
        metas = {m.uid: m for m in await store.fetch_meta(box.id)}
        assert metas[2].flags == frozenset({"\\Seen", "work", "\\Answered"})
        assert metas[2].modseq == guarded.highestmodseq
        after = await store.get_mailbox(user, "INBOX")
        assert after.highestmodseq == guarded.highestmodseq

    backend.run(body)


def test_expunge_and_vanished(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        for n in range(4):
            await deliver_one(store, user, n)
        box = await store.get_mailbox(user, "INBOX")
        before = box.highestmodseq
        await store.set_flags(box.id, [2, 3], ["\\Deleted"], FlagMode.ADD)
        assert await store.expunge(box.id) == [2, 3]
        assert await store.expunge(box.id) == []
        assert await store.expunge(box.id, [4, 77]) == [4]
        assert [m.uid for m in await store.fetch_meta(box.id)] == [1]
        assert await store.vanished(box.id, before) == [2, 3, 4]
        after = await store.get_mailbox(user, "INBOX")
        assert await store.vanished(box.id, after.highestmodseq) == []
        assert after.messages == 1 and after.uidnext == 5
        uid = await deliver_one(store, user, 9)
        assert uid == 5  # UIDs are never reused

    backend.run(body)


def test_blob_removed_with_last_reference(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        data = make_message(1)
        parsed = parse_message(data)
        await store.deliver(data, parsed, WHEN, [DeliveryTarget(user)])
        await store.deliver(data, parsed, WHEN, [DeliveryTarget(user, "Archive")])
        inbox = await store.get_mailbox(user, "INBOX")
        [meta] = await store.fetch_meta(inbox.id)
        await store.expunge(inbox.id, [1])
        assert await store.blobs.read(meta.digest) == data  # Archive still holds it
        await store.delete_mailbox(user, "Archive")
        assert await store.blobs.read(meta.digest) == data  # released, kept for a while
        assert await store.blobs.sweep() == 0
        assert await store.blobs.sweep(now=time.time() + LATER) == 1
        with pytest.raises(NotFound):
            await store.blobs.read(meta.digest)
        # the same content delivered again is stored again
        await store.deliver(data, parsed, WHEN, [DeliveryTarget(user)])
        assert await store.read_message(inbox.id, 2) == data

    backend.run(body)


def test_a_released_body_delivered_again_is_kept_and_counted(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        data = make_message(3)
        inbox = await store.get_mailbox(user, "INBOX")
        [first] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
        await store.expunge(inbox.id, [first.uid])  # released: no message uses it
        [again] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
        [more] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
        assert (again.uid, more.uid) == (2, 3)
        assert await store.blobs.sweep(now=time.time() + LATER) == 0
        await store.expunge(inbox.id, [again.uid])  # one copy left: still kept
        assert await store.blobs.sweep(now=time.time() + LATER) == 0
        assert await store.read_message(inbox.id, more.uid) == data
        await store.expunge(inbox.id, [more.uid])
        assert await store.blobs.sweep(now=time.time() + LATER) == 1

    backend.run(body)


def test_a_delivery_to_a_mailbox_that_is_gone_is_refused(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        data = make_message(4)
        await store.delete_mailbox(user, "Archive")
        with pytest.raises(NotFound):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user, "Archive")])
        assert (await store.quota_states([user]))[user].usage.messages == 0

    backend.run(body)
