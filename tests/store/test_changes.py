"""Watching a mailbox: every change reaches its watchers, from this store or another."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from poczta.store import FlagMode, MailboxChange, MailboxId, MailStore
from poczta.store.changes import ChangeHub
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import Backend, deliver_one, with_user

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # seconds: a bound for a hung test, not a measurement


def _state(modseq: int, mailbox: int = 1) -> MailboxChange:
    return MailboxChange(MailboxId(mailbox), modseq, modseq + 1, modseq)


def test_the_hub_coalesces_and_reports_only_newer_states() -> None:
    async def main() -> None:
        hub = ChangeHub()
        changes = hub.changes(MailboxId(1), since=_state(5))
        first = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0)
        hub.changed({MailboxId(1): _state(5)})  # nothing new
        hub.changed({MailboxId(2): _state(9, 2)})  # not watched
        await asyncio.sleep(0)
        assert not first.done()
        hub.changed({MailboxId(1): _state(6)})
        hub.changed({MailboxId(1): _state(7)})
        assert await first == _state(7)
        hub.gone([MailboxId(1)])
        last = await anext(changes)
        assert not last.exists
        assert [c async for c in changes] == []  # ends after the mailbox is gone
        assert not hub

    asyncio.run(main())


def test_a_watcher_that_read_an_older_state_is_told_at_once() -> None:
    async def main() -> None:
        hub = ChangeHub()
        early = hub.changes(MailboxId(1), since=_state(5))
        waiting = asyncio.ensure_future(anext(early))
        await asyncio.sleep(0)
        hub.changed({MailboxId(1): _state(8)})
        await waiting
        late = hub.changes(MailboxId(1), since=_state(6))  # read before the change
        assert (await anext(late)).highestmodseq == 8
        await early.aclose()
        await late.aclose()
        assert not hub

    asyncio.run(main())


def test_a_write_of_this_store_wakes_the_watcher(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        inbox = await store.get_mailbox(user, "INBOX")
        since = MailboxChange(inbox.id, inbox.highestmodseq, inbox.uidnext, 0)
        changes = store.changes(inbox.id, since)
        waiting = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0)
        uid = await deliver_one(store, user)
        change = await asyncio.wait_for(waiting, WAIT)
        assert (change.uidnext, change.messages) == (uid + 1, 1)
        await store.set_flags(inbox.id, [uid], ["\\Seen"], FlagMode.ADD)
        flagged = await asyncio.wait_for(anext(changes), WAIT)
        assert flagged.highestmodseq > change.highestmodseq
        await store.delete_mailbox(user, "Archive")  # another mailbox: no wake-up
        await store.expunge(inbox.id, [uid])
        expunged = await asyncio.wait_for(anext(changes), WAIT)
        assert expunged.messages == 0
        await changes.aclose()

    backend.run(body)


def test_a_write_of_another_store_on_the_same_data_wakes_the_watcher(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        folder = await store.create_mailbox(user, "Lists")
        changes = store.changes(folder.id, await store.mailbox_version(folder.id))
        waiting = asyncio.ensure_future(anext(changes))
        other = await backend.open()
        try:
            uid = await deliver_one(other, user, 1, "Lists")
            change = await asyncio.wait_for(waiting, WAIT)
            assert (change.mailbox_id, change.uidnext, change.messages) == (folder.id, uid + 1, 1)
            await other.delete_mailbox(user, "Lists")
            assert not (await asyncio.wait_for(anext(changes), WAIT)).exists
        finally:
            await other.close()

    backend.run(body)


def test_a_delivery_by_another_process_wakes_the_watcher(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            inbox = await store.get_mailbox(user, "INBOX")
            folder = await store.create_mailbox(user, "Lists")
            changes = store.changes(folder.id)
            waiting = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0.3)
            script = textwrap.dedent(
                f"""
                import asyncio
                from poczta.store.sqlite.store import SqliteStore
                from tests.store.store_helpers import deliver_one

                async def main():
                    store = await SqliteStore.open({str(tmp_path / "mail.db")!r},
                                                   {str(tmp_path / "blobs")!r})
                    await deliver_one(store, {int(user)}, 1, "Lists")
                    await store.close()

                asyncio.run(main())
                """
            )
            other = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
            assert await other.wait() == 0
            change = await asyncio.wait_for(waiting, WAIT)
            assert (change.mailbox_id, change.messages) == (folder.id, 1)
            assert (await store.get_mailbox(user, "INBOX")).messages == inbox.messages
            await store.delete_mailbox(user, "Lists")
            assert not (await asyncio.wait_for(anext(changes), WAIT)).exists
        finally:
            await store.close()

    asyncio.run(main())
