"""Reads on the event loop's connection: a mailbox's version is never stale, whichever
connection changed it, and a read that finds more rows than it takes inline still
returns them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poczta.store import FlagMode, NotFound
from poczta.store.sqlite.inline import INLINE_ROWS
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import deliver_one, with_user


def test_a_version_is_current_after_another_store_on_the_same_files_changed_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        paths = (tmp_path / "mail.db", tmp_path / "blobs")
        here, other = await SqliteStore.open(*paths), await SqliteStore.open(*paths)
        try:
            user = await with_user(here)
            inbox = await here.get_mailbox(user, "INBOX")
            uid = await deliver_one(here, user)
            before = await here.mailbox_version(inbox.id)
            assert await here.mailbox_version(inbox.id) == before
            await other.set_flags(inbox.id, [uid], ["\\Flagged"], FlagMode.ADD)
            after = await here.mailbox_version(inbox.id)
            assert after.highestmodseq == before.highestmodseq + 1
            await deliver_one(other, user, 2)
            assert (await here.mailbox_version(inbox.id)).messages == 2
            archive = await here.get_mailbox(user, "Archive")
            await here.mailbox_version(archive.id)
            await other.delete_mailbox(user, "Archive")
            with pytest.raises(NotFound):
                await here.mailbox_version(archive.id)
        finally:
            await here.close()
            await other.close()

    asyncio.run(main())


def test_changes_and_expunges_beyond_what_is_read_inline_all_come_back(tmp_path: Path) -> None:
    count = INLINE_ROWS + 5

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            inbox = await store.get_mailbox(user, "INBOX")
            uids = [await deliver_one(store, user, n) for n in range(count)]
            start = (await store.mailbox_version(inbox.id)).highestmodseq
            await store.set_flags(inbox.id, uids, ["\\Deleted"], FlagMode.ADD)
            assert [c[0] for c in await store.changed_since(inbox.id, start)] == uids
            assert await store.expunge(inbox.id) == uids
            assert await store.vanished(inbox.id, start) == uids
            assert await store.changed_since(inbox.id, start) == []
        finally:
            await store.close()

    asyncio.run(main())


def test_a_select_of_a_mailbox_without_new_mail_claims_nothing_and_commits_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            inbox = await store.get_mailbox(user, "INBOX")
            await deliver_one(store, user)
            assert await store.claim_recent(inbox.id) == 1  # message 1 is recent here
            batches = store.stats[0]
            assert await store.claim_recent(inbox.id) == 2  # and nowhere else
            assert store.stats[0] == batches
            await deliver_one(store, user, 2)
            assert await store.claim_recent(inbox.id) == 2
            assert store.stats[0] == batches + 2  # the delivery and the claim
        finally:
            await store.close()

    asyncio.run(main())
