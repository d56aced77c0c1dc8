"""The FETCH text a message keeps: written at delivery, kept by a copy and a move, made
for messages stored before the store kept it, and what FETCH would build from the parse."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.message.imap_body import bodystructure, envelope_value
from poczta.message.imap_wire import encode_value
from poczta.store import DeliveryTarget, MailStore
from poczta.store.sqlite.store import SqliteStore
from tests.mime_dovecot_fixtures import DOVECOT
from tests.store.store_helpers import WHEN, Backend, with_user

MULTIPART = DOVECOT[0].values[0]
EIGHT_BIT = "Subject: Zażółć\r\nFrom: a@x.test\r\n\r\nhi\r\n".encode()


def _live(data: bytes) -> tuple[str, str]:
    """ENVELOPE and BODYSTRUCTURE as FETCH builds them from the parse (no UTF-8)."""
    parsed = parse_message(data)
    assert parsed.structure is not None
    return (
        encode_value(envelope_value(parsed.envelope)).decode(),
        encode_value(bodystructure(parsed.structure)).decode(),
    )


def test_delivery_keeps_the_fetch_text_and_copies_keep_it(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store)
        for data in (MULTIPART, EIGHT_BIT):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        inbox = await store.get_mailbox(bob, "INBOX")
        metas = await store.fetch_meta(inbox.id)
        assert [(m.imap_envelope, m.imap_bodystructure) for m in metas] == [
            _live(MULTIPART),
            _live(EIGHT_BIT),
        ]
        assert "{" in (metas[1].imap_envelope or "")  # the 8-bit subject is a literal
        _, pairs = await store.copy_messages(bob, inbox.id, [1, 2], "Archive")
        moved = await store.move_message(bob, "INBOX", 1, "Trash")
        archive = await store.get_mailbox(bob, "Archive")
        trash = await store.get_mailbox(bob, "Trash")
        copies = [*await store.fetch_meta(archive.id), *await store.fetch_meta(trash.id)]
        assert [m.uid for m in copies] == [new for _, new in pairs] + [moved]
        assert [(m.imap_envelope, m.imap_bodystructure) for m in copies] == [
            _live(MULTIPART),
            _live(EIGHT_BIT),
            _live(MULTIPART),
        ]

    backend.run(body)


@pytest.mark.backends("sqlite")
def test_messages_stored_before_version_13_get_their_fetch_text_on_upgrade(
    tmp_path: Path,
) -> None:
    messages = [MULTIPART, EIGHT_BIT, MULTIPART]

    async def deliver() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        bob = await with_user(store)
        for data in messages:
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        await store.close()

    async def kept() -> list[tuple[str | None, str | None]]:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            inbox = await store.get_mailbox((await store.list_users())[0].id, "INBOX")
            assert inbox.messages == len(messages)  # counted by the migration
            metas = await store.fetch_meta(inbox.id)
            return [(m.imap_envelope, m.imap_bodystructure) for m in metas]
        finally:
            await store.close()

    asyncio.run(deliver())
    # Make it the database an older store left: no version 13.
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    conn.execute("ALTER TABLE messages DROP COLUMN imap_envelope")
    conn.execute("ALTER TABLE messages DROP COLUMN imap_bodystructure")
    conn.execute("DROP INDEX expunged_modseq")
    conn.execute("DROP TRIGGER messages_counted")
    conn.execute("DROP TRIGGER messages_uncounted")
    conn.execute("DROP TRIGGER messages_moved")
    conn.execute("ALTER TABLE mailboxes DROP COLUMN messages")
    conn.execute("DELETE FROM schema_version WHERE version = 13")
    conn.close()
    assert asyncio.run(kept()) == [_live(data) for data in messages]


def test_a_kept_only_read_has_the_kept_texts_and_leaves_out_the_parse(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store)
        for data in (MULTIPART, EIGHT_BIT):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        inbox = (await store.get_mailbox(bob, "INBOX")).id
        whole = await store.fetch_meta(inbox)
        kept = await store.fetch_meta(inbox, kept_only=True)
        with_bodies, bodies = await store.fetch_meta_with_bodies(
            inbox, [m.uid for m in whole], kept_only=True
        )
        for read in (kept, with_bodies):
            assert [(m.uid, m.digest, m.size, m.header_size, m.flags) for m in read] == [
                (m.uid, m.digest, m.size, m.header_size, m.flags) for m in whole
            ]
            assert [(m.imap_envelope, m.imap_bodystructure) for m in read] == [
                (m.imap_envelope, m.imap_bodystructure) for m in whole
            ]
            assert [(m.internal_date, m.sent_date, m.subject) for m in read] == [
                (m.internal_date, m.sent_date, m.subject) for m in whole
            ]
            assert all(not m.complete for m in read) and all(m.complete for m in whole)
            with pytest.raises(LookupError):
                _ = read[0].envelope
        for meta in with_bodies:
            if meta.digest in bodies:  # the store's choice (PostgreSQL: small ones)
                assert bodies[meta.digest] == await store.blobs.read(meta.digest)

    backend.run(body)
