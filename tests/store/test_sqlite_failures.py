"""Failure injection on the SQLite store: a broken disk or database is StoreUnavailable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, StoreUnavailable
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import WHEN, make_message, with_user


async def _open(tmp_path: Path) -> SqliteStore:
    return await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")


def test_unwritable_blob_dir(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        try:
            bob = await with_user(store)
            tmp = tmp_path / "blobs" / "tmp"
            tmp.rmdir()
            tmp.write_bytes(b"")  # the temp directory is now a file: every write fails
            data = make_message(1)
            with pytest.raises(StoreUnavailable):
                await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            inbox = await store.get_mailbox(bob, "INBOX")
            assert (inbox.messages, inbox.uidnext) == (0, 1)
        finally:
            await store.close()

    asyncio.run(main())


def test_directory_sync_failure_fails_the_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        try:
            bob = await with_user(store)

            def broken(self: BlobFiles, *args: object) -> None:
                raise StoreUnavailable("injected fsync failure")

            monkeypatch.setattr(BlobFiles, "sync_dirs", broken)
            calls = []
            for n in range(10):
                data = make_message(n)
                calls.append(store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, StoreUnavailable) for r in results)
            monkeypatch.undo()
            inbox = await store.get_mailbox(bob, "INBOX")
            assert (inbox.messages, inbox.uidnext) == (0, 1)
            data = make_message(99)
            done = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            assert done[0].uid == 1  # the store works again afterwards
        finally:
            await store.close()

    asyncio.run(main())


def test_database_failure(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        bob = await with_user(store)
        store._writer._conn.close()  # the database goes away under the writer
        data = make_message(1)
        with pytest.raises(StoreUnavailable):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        with pytest.raises(StoreUnavailable):
            await store.add_domain("example.net")
        await store.close()
        reopened = await _open(tmp_path)
        try:
            inbox = await reopened.get_mailbox(bob, "INBOX")
            assert inbox.messages == 0
        finally:
            await reopened.close()

    asyncio.run(main())


def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        bob = await with_user(store)
        await store.close()
        await store.close()  # idempotent
        data = make_message(1)
        with pytest.raises(StoreUnavailable):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        with pytest.raises(StoreUnavailable):
            await store.list_domains()

    asyncio.run(main())


def test_unusable_database_path(tmp_path: Path) -> None:
    (tmp_path / "mail.db").mkdir()  # a directory where the database file should be

    async def main() -> None:
        with pytest.raises(StoreUnavailable):
            await _open(tmp_path)

    asyncio.run(main())
