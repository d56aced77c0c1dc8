"""The cached MIME structure: written at delivery, returned by fetch_meta, kept by a move,
computed for messages stored before the store kept it, and encoded compactly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poczta.message import parse_message, parse_structure
from poczta.message.imap_body import section_range
from poczta.store import DeliveryTarget, MailStore
from poczta.store.codec import decode_structure, encode_structure
from poczta.store.sqlite.migrate import current_version
from poczta.store.sqlite.store import SqliteStore
from tests.mime_dovecot_fixtures import DOVECOT
from tests.store.store_helpers import WHEN, Backend, with_user

MULTIPART = DOVECOT[0].values[0]


def test_delivery_keeps_the_structure_and_sections_slice_the_stored_body(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store)
        [done] = await store.deliver(
            MULTIPART, parse_message(MULTIPART), WHEN, [DeliveryTarget(bob)]
        )
        [meta] = await store.fetch_meta(done.mailbox_id)
        assert meta.structure == parse_structure(MULTIPART)
        stored = await store.read_message(done.mailbox_id, done.uid)
        found = section_range(meta.structure, (3, 1), "MIME")
        assert found is not None
        assert stored[found[0] : found[1]].startswith(b"Content-Type: text/plain; format=flowed")
        new_uid = await store.move_message(bob, "INBOX", done.uid, "Archive")
        archive = await store.get_mailbox(bob, "Archive")
        [moved] = await store.fetch_meta(archive.id, [new_uid])
        assert moved.structure == meta.structure

    backend.run(body)


def _deliver_and_close(root: Path, messages: list[bytes]) -> None:
    async def main() -> None:
        store = await SqliteStore.open(root / "mail.db", root / "blobs")
        bob = await with_user(store)
        for data in messages:
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        await store.close()

    asyncio.run(main())


def _metas(root: Path) -> list[object]:
    async def main() -> list[object]:
        store = await SqliteStore.open(root / "mail.db", root / "blobs")
        try:
            inbox = await store.get_mailbox((await store.list_users())[0].id, "INBOX")
            return [meta.structure for meta in await store.fetch_meta(inbox.id)]
        finally:
            await store.close()

    return asyncio.run(main())


def test_messages_stored_before_version_6_get_their_structure_on_upgrade(
    tmp_path: Path,
) -> None:
    messages = [MULTIPART, b"Subject: plain\r\n\r\nhello\r\n", MULTIPART]
    _deliver_and_close(tmp_path, messages)
    # Make it the database an older store left: no structure column, no version 6.
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    conn.execute("ALTER TABLE messages DROP COLUMN structure")
    conn.execute("DELETE FROM schema_version WHERE version = 6")
    assert 6 not in {v for (v,) in conn.execute("SELECT version FROM schema_version")}
    conn.close()
    assert _metas(tmp_path) == [parse_structure(data) for data in messages]
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    assert current_version(conn) >= 6
    nulls = conn.execute("SELECT count(*) FROM messages WHERE structure IS NULL").fetchone()
    assert nulls == (0,)


def test_a_body_that_cannot_be_read_is_retried_at_the_next_open(tmp_path: Path) -> None:
    _deliver_and_close(tmp_path, [MULTIPART])
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    conn.execute("UPDATE messages SET structure = NULL")
    [digest] = conn.execute("SELECT digest FROM messages").fetchone()
    conn.close()
    [path] = [p for p in (tmp_path / "blobs").rglob(digest + "*") if p.is_file()]
    hidden = path.with_name("hidden")
    path.rename(hidden)
    assert _metas(tmp_path) == [None]
    hidden.rename(path)
    assert _metas(tmp_path) == [parse_structure(MULTIPART)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=1000), st.sampled_from([v.values[0] for v in DOVECOT])))
def test_the_structure_survives_its_encoding(data: bytes) -> None:
    structure = parse_structure(data)
    assert decode_structure(encode_structure(structure)) == structure
    assert decode_structure(None) is None
