"""The order of durability steps of the SQLite store with the "filesystem" sync method.

A body must be on disk before any row that refers to it, and a caller is answered only
after a flush that followed the commit of its rows. The flush is observed by wrapping
`BlobStore.flush`: at each call the test notes whether the body's final file exists and
whether its row is visible to another connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, StoreUnavailable
from poczta.store.blobs import BlobStore, blob_digest
from poczta.store.sqlite import SqliteStore
from tests.store.store_helpers import WHEN, make_message, with_user


def _rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def test_body_then_rows_then_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_message(1)
    final = tmp_path / "blobs" / blob_digest(data)[:2] / blob_digest(data)
    observed: list[tuple[str, bool, int]] = []
    answered: list[int] = []

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        assert store.blobs.sync_method == "filesystem"
        try:
            bob = await with_user(store)
            real_flush = store.blobs.flush

            def recording_flush() -> None:
                observed.append(("flush", final.exists(), _rows(tmp_path / "mail.db")))
                real_flush()

            monkeypatch.setattr(store.blobs, "flush", recording_flush)
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            answered.append(len(observed))
        finally:
            await store.close()

    asyncio.run(main())
    # first flush: the body (not yet under its name, no row); second: the committed row
    assert observed[:2] == [("flush", False, 0), ("flush", True, 1)]
    assert answered == [2]


def test_a_failed_flush_fails_the_callers_and_leaves_no_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            bob = await with_user(store)

            def broken(self: BlobStore) -> None:
                raise StoreUnavailable("injected: the disk is gone")

            monkeypatch.setattr(BlobStore, "flush", broken)
            calls = []
            for n in range(5):
                data = make_message(n)
                calls.append(store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            monkeypatch.undo()
            inbox = await store.get_mailbox(bob, "INBOX")
            assert (inbox.messages, inbox.uidnext) == (0, 1)
            assert list(store.blobs.digests()) == []
            # the store works again once the disk does
            data = make_message(9)
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            assert await store.read_message(inbox.id, done.uid) == data
        finally:
            await store.close()

    asyncio.run(main())


def test_file_method_commits_with_fsync(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs", blob_sync="file")
        try:
            bob = await with_user(store)
            data = make_message(2)
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            inbox = await store.get_mailbox(bob, "INBOX")
            assert await store.read_message(inbox.id, done.uid) == data
            with pytest.raises(StoreUnavailable):
                store.blobs.flush()
        finally:
            await store.close()

    asyncio.run(main())
