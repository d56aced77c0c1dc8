"""Queue ids are never given twice: not once the queue is empty, not after a restart,
not after the migration that brought this rule to an existing queue."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from poczta.store import MailStore
from poczta.store.base import DELIVERED, QueueId, RecipientAttempt
from poczta.store.sqlite.migrate import available_migrations, migrate
from tests.store.store_helpers import Backend
from tests.store.test_store_queue import queued


async def deliver_all(store: MailStore, queue_id: QueueId) -> None:
    entry = await store.get_queue_entry(queue_id)
    done = [RecipientAttempt(r.address, DELIVERED, "250 ok") for r in entry.recipients]
    await store.record_attempt(queue_id, done, datetime.now(UTC))
    assert await store.finish_queue_entry(queue_id)


def test_an_emptied_queue_gives_new_ids_also_after_a_restart(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            first = await queued(store, 1)
            second = await queued(store, 2)
            for queue_id in (first, second):
                await deliver_all(store, queue_id)
            assert await store.list_queue() == []
            third = await queued(store, 3)
            assert third > second
            await store.delete_queue_entry(third)
        finally:
            await store.close()
        store = await backend.open()
        try:
            assert await store.list_queue() == []
            assert await queued(store, 4) > third
        finally:
            await store.close()

    asyncio.run(main())


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_the_migration_keeps_entries_and_ids_and_never_reuses_them(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations = available_migrations()
    migrate(conn, [m for m in migrations if m[0] < 12])
    before = {t: _columns(conn, t) for t in ("queue", "queue_recipients")}
    conn.execute("INSERT INTO blobs (digest, size, refs) VALUES ('d', 1, 2)")
    for queue_id in (4, 9):
        conn.execute(
            "INSERT INTO queue (id, sender, digest, size, created, next_attempt, envid, held)"
            " VALUES (?, 'a@x.test', 'd', 1, 't0', 't1', 'env', 1)",
            (queue_id,),
        )
        conn.execute(
            "INSERT INTO queue_recipients (queue_id, address, status, reply_code, orcpt)"
            " VALUES (?, 'b@y.test', 'pending', 451, 'rfc822;b@y.test')",
            (queue_id,),
        )
    rows = conn.execute("SELECT * FROM queue ORDER BY id").fetchall()
    recipients = conn.execute("SELECT * FROM queue_recipients ORDER BY queue_id").fetchall()

    assert migrate(conn, [m for m in migrations if m[0] <= 12]) == [12]

    assert {t: _columns(conn, t) for t in before} == before
    assert conn.execute("SELECT * FROM queue ORDER BY id").fetchall() == rows
    assert conn.execute("SELECT * FROM queue_recipients ORDER BY queue_id").fetchall() == recipients
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"queue_next_attempt", "queue_claimed_by"} <= indexes
    conn.execute("DELETE FROM queue WHERE id = 9")  # the highest goes...
    assert conn.execute("SELECT count(*) FROM queue_recipients").fetchone() == (1,)  # cascade
    cursor = conn.execute(
        "INSERT INTO queue (sender, digest, size, created, next_attempt)"
        " VALUES ('a@x.test', 'd', 1, 't0', 't1')"
    )
    assert cursor.lastrowid == 10  # ...and its id stays taken
