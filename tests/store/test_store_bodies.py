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


def test_many_bodies_are_read_back_in_the_order_asked(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        # more than one statement's worth on PostgreSQL (4 MiB), and one too big for any
        sizes = [2_000, 1_500_000, 1_500_000, 1_500_000, 5_000_000, 0]
        bodies = [make_message(n, size=size) if size else b"" for n, size in enumerate(sizes)]
        digests = [await store.blobs.put(data) for data in bodies]
        asked = [(d, len(data)) for d, data in zip(digests, bodies, strict=True)]
        order = [3, 0, 4, 1, 0, 5, 2]
        got = await store.blobs.read_many([asked[i] for i in order])
        assert got == [bodies[i] for i in order]
        assert await store.blobs.read_many([(digests[1], None), (digests[0], None)]) == [
            bodies[1],
            bodies[0],
        ]
        assert await store.blobs.read_many([]) == []
        never = hashlib.sha256(b"never stored").hexdigest()
        with pytest.raises(NotFound):
            await store.blobs.read_many([asked[0], (never, 10), asked[1]])

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
