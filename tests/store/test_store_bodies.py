"""Contract tests of a store's bodies (`MailStore.blobs`): named by digest, stored once,
read whole whatever their size, swept once nothing uses them."""

from __future__ import annotations

import hashlib
import time

import pytest

from poczta.store import MailStore, NotFound
from tests.store.store_helpers import LATER, Backend, make_message


def test_a_body_is_named_by_its_digest_and_read_back_whole(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        small, big = make_message(1), make_message(2, size=1_000_000)
        for data in (small, big, b""):
            digest = await store.blobs.put(data)
            assert digest == hashlib.sha256(data).hexdigest()
            assert await store.blobs.put(data) == digest  # the same content, the same body
            assert await store.blobs.read(digest) == data
            assert await store.blobs.read(digest, size_hint=len(data)) == data
        with pytest.raises(NotFound):
            await store.blobs.read(hashlib.sha256(b"never stored").hexdigest())
        with pytest.raises(NotFound):
            await store.blobs.read("not a digest")
        with pytest.raises(NotFound):  # the size known: one statement on PostgreSQL
            await store.blobs.read(hashlib.sha256(b"never stored").hexdigest(), size_hint=10)

    backend.run(body)


def test_a_body_is_swept_only_after_its_last_user_and_the_grace_period(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        data = make_message(3)
        digest = await store.blobs.put(data)
        first = await store.enqueue("a@example.org", ["x@remote.test"], digest, len(data))
        second = await store.enqueue("a@example.org", ["y@remote.test"], digest, len(data))
        await store.delete_queue_entry(first)
        assert await store.blobs.sweep(now=time.time() + LATER) == 0  # still queued
        await store.delete_queue_entry(second)
        assert await store.blobs.sweep() == 0  # released, but within the grace period
        assert await store.blobs.read(digest) == data
        assert await store.blobs.sweep(now=time.time() + LATER) == 1
        with pytest.raises(NotFound):
            await store.blobs.read(digest)

    backend.run(body)
