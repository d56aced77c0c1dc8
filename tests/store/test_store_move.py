"""Contract tests of moving a message between mailboxes: new UID, MODSEQ, body kept."""

from __future__ import annotations

import time

import pytest

from poczta.store import FlagMode, MailStore, NotFound
from tests.store.store_helpers import LATER, Backend, deliver_one, make_message, with_user


def test_move_gives_a_new_uid_and_keeps_the_message(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        await deliver_one(store, user, 1)  # INBOX uid 1, so the moved one gets uid 2
        junk_uid = await deliver_one(store, user, 2, "Junk")
        junk = await store.get_mailbox(user, "Junk")
        await store.set_flags(junk.id, [junk_uid], ["\\Seen", "$Junk"], FlagMode.ADD)
        [before] = await store.fetch_meta(junk.id)
        inbox = await store.get_mailbox(user, "INBOX")

        new_uid = await store.move_message(user, "Junk", junk_uid, "inbox")

        assert new_uid == 2
        [moved] = await store.fetch_meta(inbox.id, [new_uid])
        assert moved.flags == before.flags and moved.internal_date == before.internal_date
        assert moved.digest == before.digest and moved.envelope == before.envelope
        assert await store.read_message(inbox.id, new_uid) == make_message(2)
        after_inbox = await store.get_mailbox(user, "INBOX")
        assert after_inbox.uidnext == 3 and after_inbox.messages == 2
        assert moved.modseq == after_inbox.highestmodseq > inbox.highestmodseq
        after_junk = await store.get_mailbox(user, "Junk")
        assert after_junk.messages == 0 and after_junk.highestmodseq > junk.highestmodseq
        assert await store.vanished(junk.id, junk.highestmodseq) == [junk_uid]
        with pytest.raises(NotFound):
            await store.read_message(junk.id, junk_uid)

    backend.run(body)


def test_moved_body_is_referenced_once(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        uid = await deliver_one(store, user, 3, "Junk")
        new_uid = await store.move_message(user, "Junk", uid, "Archive")
        archive = await store.get_mailbox(user, "Archive")
        [meta] = await store.fetch_meta(archive.id)
        assert meta.uid == new_uid
        await store.expunge(archive.id, [new_uid])  # the only reference: the body goes
        await store.blobs.sweep(now=time.time() + LATER)
        with pytest.raises(NotFound):
            await store.blobs.read(meta.digest)

    backend.run(body)


def test_move_of_what_does_not_exist(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        uid = await deliver_one(store, user, 4)
        for source, missing_uid, target in (
            ("INBOX", 99, "Junk"),
            ("Nowhere", uid, "Junk"),
            ("INBOX", uid, "Nowhere"),
        ):
            with pytest.raises(NotFound):
                await store.move_message(user, source, missing_uid, target)
        inbox = await store.get_mailbox(user, "INBOX")
        assert [m.uid for m in await store.fetch_meta(inbox.id)] == [uid]  # nothing moved

    backend.run(body)
