"""Contract tests of durable delivery: concurrency, group commit, accept with a queue entry."""

from __future__ import annotations

import asyncio
import time

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, MailboxId, MailStore, NotFound, Outbound
from tests.store.store_helpers import LATER, WHEN, Backend, make_message, with_user


def test_concurrent_deliveries_get_distinct_increasing_uids(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store, "bob@example.com")
        alice = await with_user(store, "alice@example.com")
        messages = [make_message(n, size=4096) for n in range(200)]

        async def one(n: int) -> list[tuple[int, int]]:
            data = messages[n]
            targets = [DeliveryTarget(bob)] + ([DeliveryTarget(alice)] if n % 2 else [])
            done = await store.deliver(data, parse_message(data), WHEN, targets)
            return [(d.mailbox_id, d.uid) for d in done]

        results = await asyncio.gather(*(one(n) for n in range(200)))
        bob_inbox = await store.get_mailbox(bob, "INBOX")
        alice_inbox = await store.get_mailbox(alice, "INBOX")
        bob_uids = sorted(uid for r in results for box, uid in r if box == bob_inbox.id)
        alice_uids = sorted(uid for r in results for box, uid in r if box == alice_inbox.id)
        assert bob_uids == list(range(1, 201))
        assert alice_uids == list(range(1, 101))
        assert (bob_inbox.messages, bob_inbox.uidnext) == (200, 201)
        metas = await store.fetch_meta(bob_inbox.id)
        assert [m.uid for m in metas] == list(range(1, 201))
        modseqs = [m.modseq for m in metas]
        assert modseqs == sorted(modseqs) and len(set(modseqs)) == 200
        for result, data in zip(results, messages, strict=True):
            box, uid = result[0]
            assert await store.read_message(MailboxId(box), uid) == data

    backend.run(body)


def test_one_failing_delivery_does_not_fail_its_batch(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store)
        data = make_message(1)
        parsed = parse_message(data)
        good = [store.deliver(data, parsed, WHEN, [DeliveryTarget(bob)]) for _ in range(20)]
        bad = store.deliver(data, parsed, WHEN, [DeliveryTarget(bob), DeliveryTarget(bob, "No")])
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert isinstance(results[-1], NotFound)
        assert all(isinstance(r, list) for r in results[:-1])
        inbox = await store.get_mailbox(bob, "INBOX")
        assert inbox.messages == 20  # the failed delivery left no copy behind
        # ... and no reference: once the 20 copies are gone, so is the body
        uids = [meta.uid for meta in await store.fetch_meta(inbox.id)]
        digest = (await store.fetch_meta(inbox.id))[0].digest
        await store.expunge(inbox.id, uids)
        assert await store.blobs.sweep(now=time.time() + LATER) == 1
        with pytest.raises(NotFound):
            await store.blobs.read(digest)

    backend.run(body)


def test_accept_delivers_and_queues_in_one_call(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store)
        data = make_message(3)
        outbound = Outbound("bob@example.com", ("Carol@Remote.test", "dave@remote.test"))
        accepted = await store.accept(
            data, parse_message(data), WHEN, [DeliveryTarget(bob)], outbound
        )
        assert len(accepted.delivered) == 1 and accepted.queue_id is not None
        [entry] = await store.list_queue()
        assert entry.id == accepted.queue_id and entry.sender == "bob@example.com"
        assert [r.address for r in entry.recipients] == ["carol@remote.test", "dave@remote.test"]
        assert all(r.status == "pending" for r in entry.recipients)
        assert entry.size == len(data) and entry.attempts == 0
        assert await store.blobs.read(entry.digest) == data
        # the queue keeps the body alive after the local copy is gone
        await store.expunge(accepted.delivered[0].mailbox_id, [accepted.delivered[0].uid])
        assert await store.blobs.read(entry.digest) == data

    backend.run(body)


def test_enqueue(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        data = make_message(4)
        digest = await store.blobs.put(data)
        queue_id = await store.enqueue("a@example.org", ["x@remote.test"], digest, len(data))
        [entry] = await store.list_queue()
        assert entry.id == queue_id and entry.digest == digest
        assert entry.created == entry.next_attempt and entry.last_error is None
        try:
            await store.enqueue("a@example.org", ["x@remote.test"], "0" * 64, 1)
        except NotFound:
            pass
        else:
            raise AssertionError("enqueue of a missing blob must fail")
        assert len(await store.list_queue()) == 1

    backend.run(body)
