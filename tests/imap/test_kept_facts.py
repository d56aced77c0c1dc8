"""A FETCH answered from the texts kept with each message reads only those of its facts
(`fetch_meta`'s kept_only), and a message without them is answered the same as if it
had them: its facts are read again whole."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, UserId
from poczta.store.sqlite.store import SqliteStore
from tests.imap.session_harness import logged_in_session
from tests.store.store_helpers import WHEN, make_message

ALICE = "alice@example.test"
FIRST_OPEN = b"a UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)\r\n"


async def _deliver(store: SqliteStore, count: int) -> UserId:
    await store.add_domain("example.test")
    user = await store.add_user(ALICE, "hash", "scram")
    for n in range(count):
        data = make_message(n, subject="Caf\u00e9" if n == 1 else "Hello")
        await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
    return user


async def _first_open(root: Path) -> bytes:
    store = await SqliteStore.open(root / "mail.db", root / "blobs")
    try:
        session, connection = logged_in_session(store)
        alice = await store.get_user(ALICE)
        assert alice is not None
        session.user_id = alice.id
        await session.handle(session.reader.feed(b"s SELECT INBOX\r\n"))
        connection.written.clear()
        await session.handle(session.reader.feed(FIRST_OPEN))
        return bytes(connection.written)
    finally:
        await store.close()


def test_a_message_without_its_kept_texts_is_answered_as_if_it_had_them(tmp_path: Path) -> None:
    async def fill() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        inbox = await store.get_mailbox(await _deliver(store, 3), "INBOX")
        [kept] = await store.fetch_meta(inbox.id, [2], kept_only=True)
        assert not kept.complete and kept.imap_envelope is not None
        with pytest.raises(LookupError):
            _ = kept.envelope
        [whole] = await store.fetch_meta(inbox.id, [2])
        assert whole.complete and whole.envelope.subject == kept.subject
        await store.close()

    asyncio.run(fill())
    asyncio.run(_first_open(tmp_path))  # takes \Recent, which the next would not see
    kept = asyncio.run(_first_open(tmp_path))
    assert kept.count(b" FETCH (UID ") == 3 and b"a OK" in kept
    with sqlite3.connect(tmp_path / "mail.db") as conn:  # as stored before they were kept
        conn.execute("UPDATE messages SET imap_envelope = NULL, imap_bodystructure = NULL"
                     " WHERE uid = 2")  # fmt: skip
    assert asyncio.run(_first_open(tmp_path)) == kept
