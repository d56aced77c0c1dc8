"""The store calls IMAP makes: versions, changes since a MODSEQ, COPY, MOVE, subscriptions."""

from __future__ import annotations

import time

import pytest

from poczta.store import FlagMode, MailStore, NotFound
from tests.store.store_helpers import LATER, Backend, deliver_one, make_message, with_user


def test_version_and_changes_since_a_modseq(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        start = await store.mailbox_version(inbox.id)
        first = await deliver_one(store, user, 1)
        second = await deliver_one(store, user, 2)
        middle = await store.mailbox_version(inbox.id)
        assert (middle.messages, middle.uidnext) == (2, second + 1)
        assert [c[0] for c in await store.changed_since(inbox.id, start.highestmodseq)] == [
            first,
            second,
        ]
        await store.set_flags(inbox.id, [first], ["\\Seen"], FlagMode.ADD)
        [(uid, flags, modseq)] = await store.changed_since(inbox.id, middle.highestmodseq)
        assert (uid, flags) == (first, frozenset({"\\Seen"}))
        assert modseq == (await store.mailbox_version(inbox.id)).highestmodseq
        assert await store.mailbox_counts(inbox.id) == (
            2,
            1,
            0,
            len(make_message(1)) + len(make_message(2)),
        )
        with pytest.raises(NotFound):
            await store.mailbox_version(inbox.id + 1000)

    backend.run(body)


def test_news_since_is_the_version_and_the_changes_read_together(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        first = await deliver_one(store, user, 1)
        known = await store.mailbox_version(inbox.id)
        assert await store.news_since(inbox.id, known.highestmodseq) == (known, [])
        second = await deliver_one(store, user, 2)
        await store.set_flags(inbox.id, [first], ["\\Flagged"], FlagMode.ADD)
        version, changes = await store.news_since(inbox.id, known.highestmodseq)
        assert version == await store.mailbox_version(inbox.id)
        assert changes == await store.changed_since(inbox.id, known.highestmodseq)
        assert [(uid, flags) for uid, flags, _ in changes] == [
            (first, frozenset({"\\Flagged"})),
            (second, frozenset()),
        ]
        await store.expunge(inbox.id, [second])  # a MODSEQ of its own, no message's
        flagged = max(modseq for _, _, modseq in changes)
        version, changes = await store.news_since(inbox.id, flagged)
        assert (version.messages, changes) == (1, []) and version.highestmodseq > flagged
        with pytest.raises(NotFound):
            await store.news_since(inbox.id + 1000, 0)

    backend.run(body)


def test_news_and_facts_are_the_news_and_the_facts_of_one_moment(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        box = (await store.get_mailbox(user, "INBOX")).id
        first = await deliver_one(store, user, 1)
        known = (await store.mailbox_version(box)).highestmodseq
        second = await deliver_one(store, user, 2)
        await store.set_flags(box, [first], ["\\Seen"], FlagMode.ADD)
        asked = [first, second, second + 5]  # one that is not there
        for kept_only in (False, True):
            version, changes, metas, bodies = await store.news_and_facts(
                box, known, asked, kept_only=kept_only
            )
            assert (version, changes) == await store.news_since(box, known)
            expected, _ = await store.fetch_meta_with_bodies(box, asked, kept_only=kept_only)
            assert [(m.uid, m.flags, m.modseq, m.digest, m.complete) for m in metas] == [
                (m.uid, m.flags, m.modseq, m.digest, m.complete) for m in expected
            ]
            for meta in metas:  # the store's choice which come along
                if meta.digest in bodies:
                    assert bodies[meta.digest] == await store.blobs.read(meta.digest)
        many = [first, second, *range(second + 1, second + 20)]  # more than one statement takes
        _, changes, metas, _ = await store.news_and_facts(box, known, many)
        assert changes == (await store.news_since(box, known))[1]
        assert [m.uid for m in metas] == [first, second]
        now = version.highestmodseq
        assert (await store.news_and_facts(box, now, [first]))[1] == []  # nothing new
        with pytest.raises(NotFound):
            await store.news_and_facts(box + 1000, 0, [first])

    backend.run(body)


def test_deleted_storage_is_the_size_of_the_deleted_messages(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        uids = [await deliver_one(store, user, n) for n in range(3)]
        assert await store.deleted_storage(inbox.id) == 0
        await store.set_flags(inbox.id, uids[:2], ["\\Deleted"], FlagMode.ADD)
        await store.set_flags(inbox.id, uids[2:], ["\\Seen", "Deleted"], FlagMode.ADD)
        deleted = len(make_message(0)) + len(make_message(1))
        assert await store.deleted_storage(inbox.id) == deleted
        await store.expunge(inbox.id, uids[:2])
        assert await store.deleted_storage(inbox.id) == 0

    backend.run(body)


def test_copy_keeps_flags_and_bodies_and_move_expunges(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        uids = [await deliver_one(store, user, n) for n in range(3)]
        await store.set_flags(inbox.id, uids[:1], ["\\Flagged", "$Work"], FlagMode.ADD)
        validity, pairs = await store.copy_messages(
            user, inbox.id, [uids[2], uids[0], 99], "Archive"
        )
        archive = await store.get_mailbox(user, "Archive")
        assert validity == archive.uidvalidity
        assert pairs == [(uids[0], 1), (uids[2], 2)]
        metas = {m.uid: m for m in await store.fetch_meta(archive.id)}
        assert metas[1].flags == frozenset({"\\Flagged", "$Work"})
        # The copies hold their own references: expunging the originals keeps the bodies.
        await store.expunge(inbox.id, uids)
        await store.blobs.sweep(now=time.time() + LATER)
        assert await store.read_message(archive.id, 2) == make_message(2)
        before = await store.mailbox_version(archive.id)
        _, moved = await store.copy_messages(user, archive.id, [1, 2], "Junk", move=True)
        assert [new for _, new in moved] == [1, 2]
        assert (await store.mailbox_version(archive.id)).messages == 0
        assert await store.vanished(archive.id, before.highestmodseq) == [1, 2]
        junk = await store.get_mailbox(user, "Junk")
        assert await store.read_message(junk.id, 2) == make_message(2)
        with pytest.raises(NotFound):
            await store.copy_messages(user, junk.id, [1], "Nowhere")
        other = await with_user(store, "carol@example.com")
        with pytest.raises(NotFound):  # not carol's to copy from
            await store.copy_messages(other, junk.id, [1, 2], "Archive")
        assert [m.uid for m in await store.fetch_meta(junk.id)] == [1, 2]

    backend.run(body)


def test_subscriptions_start_with_the_default_mailboxes(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        assert "INBOX" in await store.subscriptions(user)
        await store.subscribe(user, "Lists/Python")  # need not exist
        await store.subscribe(user, "Lists/Python")
        assert "Lists/Python" in await store.subscriptions(user)
        assert await store.unsubscribe(user, "Lists/Python")
        assert not await store.unsubscribe(user, "Lists/Python")

    backend.run(body)


def test_message_counts_follow_deliveries_copies_moves_and_expunges(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        uids = [await deliver_one(store, user, n) for n in range(4)]

        async def counts() -> tuple[int, int, int]:
            boxes = {b.name: b.messages for b in await store.list_mailboxes(user)}
            version = await store.mailbox_version(inbox.id)
            return boxes["INBOX"], boxes["Archive"], version.messages

        assert await counts() == (4, 0, 4)
        await store.copy_messages(user, inbox.id, uids[:2], "Archive")
        assert await counts() == (4, 2, 4)
        await store.copy_messages(user, inbox.id, uids[2:], "Archive", move=True)
        assert await counts() == (2, 4, 2)
        await store.set_flags(inbox.id, uids[:1], ["\\Deleted"], FlagMode.ADD)
        await store.expunge(inbox.id)
        assert await counts() == (1, 4, 1)
        assert (await store.get_mailbox(user, "Archive")).messages == 4

    backend.run(body)


def test_a_move_into_the_mailbox_itself_gives_new_uids_and_keeps_the_count(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        uids = [await deliver_one(store, user, n) for n in range(3)]
        usage = (await store.quota_states([user]))[user].usage
        _, pairs = await store.copy_messages(user, inbox.id, uids[:2], "INBOX", move=True)
        assert pairs == [(uids[0], 4), (uids[1], 5)]
        after = await store.get_mailbox(user, "INBOX")
        assert (after.messages, after.uidnext) == (3, 6)
        assert [m.uid for m in await store.fetch_meta(inbox.id)] == [uids[2], 4, 5]
        assert await store.vanished(inbox.id, inbox.highestmodseq) == uids[:2]
        assert (await store.quota_states([user]))[user].usage == usage

    backend.run(body)
