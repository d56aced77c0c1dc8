"""SEARCH keeps the mailbox's facts between commands and, when the mailbox changed, takes
the changes from the view: every answer is the one a session reading all anew gives,
and only new messages are read from the store again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from poczta.imap import view as view_module
from poczta.imap.session.core import ImapSession
from poczta.message import parse_message
from poczta.store import DeliveryTarget, MailboxId, UserId
from poczta.store.base import FlagMode, MessageMeta
from poczta.store.sqlite.store import SqliteStore
from tests.imap.session_harness import RecordingConnection, logged_in_session
from tests.store.store_helpers import WHEN, make_message

ALICE = "alice@example.test"
SEARCHES = [
    b"UID SEARCH UNSEEN",
    b"UID SEARCH FLAGGED NOT DELETED",
    b"SEARCH SUBJECT Hello SEEN",
    b"UID SEARCH KEYWORD $Work",
    b"UID SEARCH MODSEQ 1",
]


class Reads:
    """The store's fetch_meta calls of a session: which UIDs each asked for."""

    def __init__(self, store: SqliteStore) -> None:
        self.asked: list[Sequence[int] | None] = []
        self._store = store

    async def fetch_meta(
        self, mailbox: MailboxId, uids: Sequence[int] | None = None, **kw: Any
    ) -> list[MessageMeta]:
        self.asked.append(None if uids is None else list(uids))
        return await self._store.fetch_meta(mailbox, uids, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _deliver(store: SqliteStore, user: UserId, n: int) -> None:
    data = make_message(n, subject="Hello" if n % 2 else "Other")
    await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])


async def _filled(root: Path, count: int) -> tuple[SqliteStore, UserId, MailboxId]:
    """A store with alice's INBOX of `count` messages."""
    store = await SqliteStore.open(root / "mail.db", root / "blobs")
    await store.add_domain("example.test")
    user = await store.add_user(ALICE, "hash", "scram")
    for n in range(1, count + 1):
        await _deliver(store, user, n)
    return store, user, (await store.get_mailbox(user, "INBOX")).id


async def _session(store: object, user: UserId) -> tuple[ImapSession, RecordingConnection]:
    session, connection = logged_in_session(store)
    session.user_id = user
    await session.handle(session.reader.feed(b"s SELECT INBOX\r\n"))
    return session, connection


async def _ask(session: ImapSession, connection: RecordingConnection, line: bytes) -> list[bytes]:
    connection.written.clear()
    await session.handle(session.reader.feed(b"t " + line + b"\r\n"))
    await session.answer_runs()  # a STORE is answered once committed
    lines = bytes(connection.written).split(b"\r\n")
    assert any(x.startswith(b"t OK") for x in lines), lines
    return [x for x in lines if x.startswith((b"* SEARCH", b"* ESEARCH"))]


def test_searches_after_changes_answer_as_a_fresh_read_and_read_only_the_new(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store, user, inbox = await _filled(tmp_path, 20)
        try:
            reads = Reads(store)
            session, connection = await _session(reads, user)

            async def same_as_fresh() -> None:
                fresh, fresh_connection = await _session(store, user)
                for line in SEARCHES:
                    assert await _ask(session, connection, line) == await _ask(
                        fresh, fresh_connection, line
                    ), line

            await same_as_fresh()
            assert reads.asked == [None]  # one read of all

            await _ask(session, connection, b"UID STORE 3,5 +FLAGS (\\Seen $Work)")
            await same_as_fresh()
            await store.set_flags(inbox, [4, 7], ["\\Flagged"], FlagMode.ADD)  # another session
            await same_as_fresh()
            await _ask(session, connection, b"STORE 1:2 -FLAGS (\\Seen)")
            await same_as_fresh()
            assert reads.asked == [None]  # flags moved: from the view, nothing read

            await _deliver(store, user, 21)
            await _deliver(store, user, 22)
            await same_as_fresh()
            assert reads.asked[1:] == [[21, 22]]  # the new ones alone

            await store.set_flags(inbox, [6, 21], ["\\Deleted"], FlagMode.ADD)
            await store.expunge(inbox, [6, 21])
            await _ask(session, connection, b"NOOP")  # told of the expunges
            await same_as_fresh()
            assert reads.asked[2:] == []
            assert len(session.search_cache.by_uid) == 20  # type: ignore[union-attr]
        finally:
            await store.close()

    asyncio.run(main())


def test_changes_past_the_views_log_of_moves_are_still_taken_from_the_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_module, "CHANGE_LOG", 4)  # the view forgets all but 2-4 moves

    async def main() -> None:
        store, user, inbox = await _filled(tmp_path, 12)
        try:
            reads = Reads(store)
            session, connection = await _session(reads, user)
            assert await _ask(session, connection, b"UID SEARCH FLAGGED") == [b"* SEARCH"]
            await _ask(session, connection, b"UID STORE 1 +FLAGS (\\Flagged)")
            assert await _ask(session, connection, b"UID SEARCH FLAGGED") == [b"* SEARCH 1"]
            assert reads.asked == [None]  # one move: from the view
            assert session.search_cache is not None and session.view is not None
            kept = session.search_cache.key[2]
            await store.set_flags(inbox, list(range(2, 12)), ["\\Flagged"], FlagMode.ADD)
            found = await _ask(session, connection, b"UID SEARCH FLAGGED")
            assert not session.view.knows_changes_since(kept)  # the log no longer reaches
            assert found == [b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 12))]
            assert reads.asked == [None]  # ten moves past the log: the view's MODSEQs tell
            await session.handle(session.reader.feed(b"s SELECT INBOX\r\n"))  # a new view
            assert await _ask(session, connection, b"UID SEARCH FLAGGED") == found
            assert reads.asked == [None, None]  # the facts are the view's: read anew
        finally:
            await store.close()

    asyncio.run(main())
