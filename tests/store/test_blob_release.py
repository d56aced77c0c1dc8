"""A body stays on disk while anything refers to it, even when its last copy is expunged
while the same content is being delivered (the writer's batches and other processes)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from poczta.message import parse_message
from poczta.store import DeliveryTarget
from poczta.store.sqlite.blob_refs import sweep_job
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import LATER, WHEN, make_message, with_user


async def _hold_writer(store: SqliteStore, release: threading.Event) -> asyncio.Task[object]:
    """Occupy the writer thread until `release` is set, so later jobs share one batch."""
    started = threading.Event()

    def block(conn: object, ctx: object) -> None:
        started.set()
        release.wait(10)

    task = asyncio.ensure_future(store._writer.submit(block))
    await asyncio.to_thread(started.wait, 10)
    return task


def test_expunging_the_last_copy_while_the_same_body_is_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            data = make_message(7)
            inbox = await store.get_mailbox(user, "INBOX")
            [first] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            release = threading.Event()
            holder = await _hold_writer(store, release)
            # Both wait for the next batch: the expunge drops the last reference to the
            # body, the delivery (staged while the file still existed) takes a new one.
            expunge = asyncio.ensure_future(store.expunge(inbox.id, [first.uid]))
            await asyncio.sleep(0)
            deliver = asyncio.ensure_future(
                store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            )
            await asyncio.sleep(0.05)
            release.set()
            await holder
            assert await expunge == [first.uid]
            [second] = await deliver
            assert await store.read_message(inbox.id, second.uid) == data
        finally:
            await store.close()
        reopened = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            assert await reopened.read_message(inbox.id, second.uid) == data
        finally:
            await reopened.close()

    asyncio.run(main())


def test_a_body_delivered_again_within_the_grace_period_is_kept(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            data = make_message(8)
            inbox = await store.get_mailbox(user, "INBOX")
            [first] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            await store.expunge(inbox.id, [first.uid])
            [second] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            assert await store.blobs.sweep(now=time.time() + LATER) == 0
            assert await store.read_message(inbox.id, second.uid) == data
        finally:
            await store.close()

    asyncio.run(main())


def test_the_sweep_leaves_a_file_written_within_the_grace_period(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs", blob_grace=60)
        try:
            user = await with_user(store)
            data = make_message(9)
            inbox = await store.get_mailbox(user, "INBOX")
            [first] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            [meta] = await store.fetch_meta(inbox.id)
            await store.expunge(inbox.id, [first.uid])
            # As if another process had just placed the same body again for a delivery
            # whose rows are not written yet.
            now = time.time() + 600
            fresh = now - 30
            os.utime(store.blobs.files.path(meta.digest), (fresh, fresh))
            assert await store.blobs.sweep(now=now) == 0
            assert await store.blobs.read(meta.digest) == data
            os.utime(store.blobs.files.path(meta.digest), (now - 120, now - 120))
            assert await store.blobs.sweep(now=now) == 1
            assert not store.blobs.files.path(meta.digest).exists()
        finally:
            await store.close()

    asyncio.run(main())


def test_a_delivery_staged_before_its_body_was_swept_writes_it_again(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await with_user(store)
            data = make_message(10)
            inbox = await store.get_mailbox(user, "INBOX")
            [first] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            await store.expunge(inbox.id, [first.uid])
            release = threading.Event()
            holder = await _hold_writer(store, release)
            sweep = asyncio.ensure_future(store._writer.submit(sweep_job(time.time() + LATER)))
            await asyncio.sleep(0)
            deliver = asyncio.ensure_future(
                store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            )
            await asyncio.sleep(0.05)
            release.set()
            await holder
            assert await sweep == 1  # the file went, before the delivery's rows
            [second] = await deliver
            assert await store.read_message(inbox.id, second.uid) == data
        finally:
            await store.close()

    asyncio.run(main())
