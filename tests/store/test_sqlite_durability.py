"""Durability of the SQLite store with the "filesystem" sync method, and its recovery.

A caller is answered only after one flush that followed both the placing of its body
and the commit of its rows; until then the body is listed as unflushed. The flush is
observed by wrapping `BlobFiles.flush`: at each call the test notes whether the body's
final file exists, whether its row is visible to another connection and whether the
body is listed. Recovery is tested on the states a machine crash during that flush can
leave: rows on disk, the body missing or partial.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, FlagMode, StoreUnavailable
from poczta.store.sqlite.blobs import BlobFiles, blob_digest
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import WHEN, make_message, with_user


def _count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_body_then_rows_then_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_message(1)
    final = tmp_path / "blobs" / blob_digest(data)[:2] / blob_digest(data)
    observed: list[tuple[bool, int, int]] = []
    answered: list[int] = []

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        assert store.blobs.files.sync_method == "filesystem"
        try:
            bob = await with_user(store)
            real_flush = store.blobs.files.flush

            def recording_flush() -> None:
                db = tmp_path / "mail.db"
                observed.append(
                    (final.exists(), _count(db, "messages"), _count(db, "unflushed_bodies"))
                )
                real_flush()

            monkeypatch.setattr(store.blobs.files, "flush", recording_flush)
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            answered.append(len(observed))
        finally:
            await store.close()

    asyncio.run(main())
    # one flush: the body in place, its row committed and the body listed as unflushed
    assert observed == [(True, 1, 1)]
    assert answered == [1]
    assert _count(tmp_path / "mail.db", "unflushed_bodies") == 0  # unlisted at close


def test_a_failed_flush_fails_the_callers_and_keeps_their_bodies_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            bob = await with_user(store)

            def broken(self: BlobFiles) -> None:
                raise StoreUnavailable("injected: the disk is gone")

            monkeypatch.setattr(BlobFiles, "flush", broken)
            calls = []
            for n in range(5):
                data = make_message(n)
                calls.append(store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            # committed but not known to be on disk: listed for the next open to check
            assert _count(tmp_path / "mail.db", "unflushed_bodies") == 5
            monkeypatch.undo()
            data = make_message(9)  # the store works again once the disk does
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            inbox = await store.get_mailbox(bob, "INBOX")
            assert await store.read_message(inbox.id, done.uid) == data
        finally:
            await store.close()
        reopened = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:  # the bodies turned out to be complete: their messages stay
            inbox = await reopened.get_mailbox(bob, "INBOX")
            assert inbox.messages == 6
        finally:
            await reopened.close()

    asyncio.run(main())
    assert _count(tmp_path / "mail.db", "unflushed_bodies") == 0


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
                store.blobs.files.flush()
        finally:
            await store.close()

    asyncio.run(main())


async def _deliver_two(root: Path) -> tuple[bytes, bytes]:
    store = await SqliteStore.open(root / "mail.db", root / "blobs")
    try:
        bob = await with_user(store)
        first, second = make_message(1), make_message(2, size=3000)
        for data in (first, second):
            await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
        await store.enqueue("bob@example.com", ["x@remote.test"], blob_digest(second), len(second))
    finally:
        await store.close()
    return first, second


def _crash_during_flush(root: Path, lost: bytes, kept: bytes) -> None:
    """What a machine crash mid-flush can leave: rows listed, one body cut short."""
    conn = sqlite3.connect(root / "mail.db")
    conn.executemany(
        "INSERT INTO unflushed_bodies (batch, digest) VALUES (7, ?)",
        [(blob_digest(lost),), (blob_digest(kept),)],
    )
    conn.commit()
    conn.close()
    body = root / "blobs" / blob_digest(lost)[:2] / blob_digest(lost)
    body.write_bytes(lost[:100])


@pytest.mark.parametrize("sync", ["filesystem", "file"])
def test_rows_of_a_body_lost_in_a_crash_are_removed(tmp_path: Path, sync: str) -> None:
    kept, lost = asyncio.run(_deliver_two(tmp_path))
    _crash_during_flush(tmp_path, lost, kept)

    async def reopen() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs", blob_sync=sync)
        try:
            bob = await store.get_user("bob@example.com")
            assert bob is not None
            inbox = await store.get_mailbox(bob.id, "INBOX")
            metas = await store.fetch_meta(inbox.id)
            assert [meta.digest for meta in metas] == [blob_digest(kept)]
            assert await store.read_message(inbox.id, metas[0].uid) == kept
            assert await store.list_queue() == []  # its queue entry went with it
            assert list(store.blobs.files.digests()) == [blob_digest(kept)]
        finally:
            await store.close()

    asyncio.run(reopen())
    assert _count(tmp_path / "mail.db", "unflushed_bodies") == 0
    assert _count(tmp_path / "mail.db", "blobs") == 1


def test_listed_bodies_that_made_it_keep_their_rows(tmp_path: Path) -> None:
    _, second = asyncio.run(_deliver_two(tmp_path))
    conn = sqlite3.connect(tmp_path / "mail.db")
    conn.execute(
        "INSERT INTO unflushed_bodies (batch, digest) VALUES (1, ?)", (blob_digest(second),)
    )
    conn.commit()
    conn.close()

    async def reopen() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            bob = await store.get_user("bob@example.com")
            assert bob is not None
            inbox = await store.get_mailbox(bob.id, "INBOX")
            assert inbox.messages == 2
            assert len(await store.list_queue()) == 1
        finally:
            await store.close()

    asyncio.run(reopen())
    assert _count(tmp_path / "mail.db", "unflushed_bodies") == 0


def test_a_second_connection_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Opening another connection in the same process must not drop the POSIX locks
    SQLite holds through the first, or another process that comes and goes takes itself
    for the last user of the WAL and resets it under the first connection's writes."""
    import subprocess
    import sys

    from poczta.store.sqlite.writer import connect

    path = tmp_path / "locks.db"
    first = connect(path)
    first.execute("CREATE TABLE t (n INTEGER)")
    first.execute("INSERT INTO t VALUES (1)")
    connect(path).close()
    count = (
        f"import sqlite3; db = sqlite3.connect({str(path)!r}); "
        "print(db.execute('select count(*) from t').fetchone()[0])"
    )
    subprocess.run([sys.executable, "-c", count], check=True, capture_output=True)
    first.execute("INSERT INTO t VALUES (2)")
    seen = subprocess.run([sys.executable, "-c", count], check=True, capture_output=True, text=True)
    assert seen.stdout.strip() == "2"


def test_a_flag_change_is_committed_with_an_fsync_of_the_log_and_no_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that placed no body is durable by its COMMIT (synchronous=FULL) alone."""
    flushes: list[int] = []
    statements: list[str] = []

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            bob = await with_user(store)
            data = make_message(1)
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            files = store.blobs.files
            real_flush = files.flush
            monkeypatch.setattr(files, "flush", lambda: (flushes.append(1), real_flush()))
            store._writer._conn.set_trace_callback(statements.append)
            await store.set_flags(done.mailbox_id, [done.uid], ["\\Seen"], FlagMode.ADD)
        finally:
            await store.close()

    asyncio.run(main())
    assert flushes == []
    commit = statements.index("COMMIT")
    assert "PRAGMA synchronous = FULL" in statements[:commit]
    assert statements[commit + 1 :].count("PRAGMA synchronous = NORMAL") >= 1
