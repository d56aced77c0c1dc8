"""Contract tests of the outbound queue: DSN parameters, claims, results, finishing, admin."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from poczta.message import parse_message
from poczta.store import MailStore
from poczta.store.base import (
    DELIVERED,
    FAILED,
    PENDING,
    NotFound,
    Outbound,
    QueueId,
    RecipientAttempt,
    RecipientDsn,
)
from tests.store.store_helpers import LATER, WHEN, Backend, make_message

MINUTE = timedelta(minutes=1)


async def queued(store: MailStore, n: int = 0, *recipients: str) -> QueueId:
    data = make_message(n)
    outbound = Outbound(
        "alice@example.org",
        recipients or ("Carol@Remote.test", "dave@remote.test"),
        envid="env-1",
        ret="HDRS",
        dsn={"Carol@Remote.test": RecipientDsn(("SUCCESS", "FAILURE"), "rfc822;carol@alias.test")},
    )
    accepted = await store.accept(data, parse_message(data), WHEN, (), outbound)
    assert accepted.queue_id is not None
    return accepted.queue_id


def test_submission_parameters_are_kept(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        entry = await store.get_queue_entry(await queued(store))
        assert (entry.envid, entry.ret, entry.held, entry.claimed_by) == (
            "env-1",
            "HDRS",
            False,
            None,
        )
        carol, dave = entry.recipients
        assert (carol.address, carol.notify, carol.orcpt) == (
            "carol@remote.test",
            ("SUCCESS", "FAILURE"),
            "rfc822;carol@alias.test",
        )
        assert (dave.notify, dave.orcpt, dave.status, dave.attempts) == (None, None, PENDING, 0)
        with pytest.raises(NotFound):
            await store.get_queue_entry(QueueId(entry.id + 100))

    backend.run(body)


def test_a_claim_is_exclusive_until_it_expires(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        first = await queued(store, 1)
        second = await queued(store, 2)
        now = datetime.now(UTC) + MINUTE
        claimed = await store.claim_queue("node:a", now, now + 10 * MINUTE, 1)
        assert [e.id for e in claimed] == [first] and claimed[0].claimed_by == "node:a"
        others = await store.claim_queue("node:b", now, now + 60 * MINUTE, 10)
        assert [e.id for e in others] == [second]
        assert await store.claim_queue("node:b", now, now + 10 * MINUTE, 10) == []
        # runner a crashed: once its claim has run out, another runner takes the entry
        late = now + 11 * MINUTE
        assert [e.id for e in await store.claim_queue("node:c", late, late + MINUTE, 10)] == [first]

    backend.run(body)


def test_renewed_and_released_claims(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        one, two = await queued(store, 1), await queued(store, 2)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("node:dead", now, now + MINUTE, 1)
        await store.claim_queue("node:alive", now, now + MINUTE, 1)
        assert await store.renew_claims("node:alive", now + 60 * MINUTE) == 1
        later = now + 2 * MINUTE  # the dead runner's claim ran out, the renewed one did not
        assert [e.id for e in await store.claim_queue("other", later, later, 10)] == [one]
        await store.claim_queue("node:dead", later + MINUTE, later + 60 * MINUTE, 10)
        # a restarted runner of this node drops what its dead predecessor held, at once
        assert await store.release_claims("node:", "node:alive") == 1
        assert (await store.get_queue_entry(one)).claimed_by is None
        assert (await store.get_queue_entry(two)).claimed_by == "node:alive"

    backend.run(body)


def test_results_are_recorded_and_a_delivered_recipient_stays_delivered(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        now = datetime.now(UTC)
        await store.record_attempt(
            queue_id,
            [
                RecipientAttempt(
                    "carol@remote.test", DELIVERED, "250 ok", 250, "2.0.0", "mx.r", "tls"
                ),
                RecipientAttempt("DAVE@remote.test", PENDING, "451 later", 451, "4.3.0", "mx.r"),
            ],
            now,
        )
        # a repeated write (a retry after a crash) cannot undo the delivery
        await store.record_attempt(
            queue_id, [RecipientAttempt("carol@remote.test", PENDING, "421 gone")], now
        )
        carol, dave = (await store.get_queue_entry(queue_id)).recipients
        assert (carol.status, carol.reply_code, carol.attempts, carol.tls) == (
            DELIVERED,
            250,
            1,
            "tls",
        )
        assert (dave.status, dave.last_error, dave.reply_enhanced) == (
            PENDING,
            "451 later",
            "4.3.0",
        )
        assert dave.last_attempt is not None
        assert not await store.finish_queue_entry(queue_id)  # dave is still pending

    backend.run(body)


def test_the_last_results_finish_the_entry_in_the_same_write(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        entry = await store.get_queue_entry(queue_id)
        now = datetime.now(UTC)
        carol = [RecipientAttempt("carol@remote.test", DELIVERED, "250 ok")]
        assert not await store.record_attempt(queue_id, carol, now, finish=True)  # dave pends
        assert [r.status for r in (await store.get_queue_entry(queue_id)).recipients] == [
            DELIVERED,
            PENDING,
        ]
        dave = [RecipientAttempt("dave@remote.test", DELIVERED, "250 ok")]
        assert await store.record_attempt(queue_id, dave, now, finish=True)
        assert await store.list_queue() == []
        assert await store.blobs.sweep(now=time.time() + LATER) == 1
        with pytest.raises(NotFound):
            await store.blobs.read(entry.digest)

    backend.run(body)


def test_reschedule_counts_the_attempt_and_drops_the_claim(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("runner", now, now + MINUTE, 5)
        await store.reschedule(queue_id, "runner", now + 5 * MINUTE, "451 later")
        entry = await store.get_queue_entry(queue_id)
        assert (entry.attempts, entry.last_error, entry.claimed_by) == (1, "451 later", None)
        assert entry.next_attempt == now + 5 * MINUTE
        assert entry.next_attempt == now + 5 * MINUTE
        assert await store.next_queue_due() == now + 5 * MINUTE
        await store.flush_queue(now)
        await store.claim_queue("runner", now, now + 30 * MINUTE, 5)
        assert await store.next_queue_due() == now + 30 * MINUTE  # claimed: due when it runs out
        await store.reschedule(queue_id, "runner", now + 5 * MINUTE, "451 later")
        assert await store.claim_queue("runner", now + MINUTE, now + 2 * MINUTE, 5) == []
        due = now + 5 * MINUTE
        assert len(await store.claim_queue("runner", due, due + MINUTE, 5)) == 1

    backend.run(body)


def test_finishing_releases_the_body(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        entry = await store.get_queue_entry(queue_id)
        results = [
            RecipientAttempt("carol@remote.test", DELIVERED, "250 ok"),
            RecipientAttempt("dave@remote.test", FAILED, "550 no such user", 550, "5.1.1"),
        ]
        await store.record_attempt(queue_id, results, datetime.now(UTC))
        await store.mark_reported(queue_id, ["dave@remote.test"])
        reported = {
            r.address: r.reported for r in (await store.get_queue_entry(queue_id)).recipients
        }
        assert reported == {"carol@remote.test": False, "dave@remote.test": True}
        assert await store.finish_queue_entry(queue_id)
        assert await store.list_queue() == []
        assert await store.blobs.sweep(now=time.time() + LATER) == 1
        with pytest.raises(NotFound):
            await store.blobs.read(entry.digest)

    backend.run(body)


def test_hold_release_flush_bounce_delete(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        one, two = await queued(store, 1), await queued(store, 2)
        now = datetime.now(UTC) + MINUTE
        for queue_id in (one, two):
            await store.claim_queue("r", now, now, 5)
            await store.reschedule(queue_id, "r", now + 60 * MINUTE, "later")
        await store.hold_queue_entry(one, True)
        assert (await store.get_queue_entry(one)).held
        assert await store.flush_queue(now) == 1  # the held one stays where it is
        assert [e.id for e in await store.claim_queue("r", now, now + MINUTE, 5)] == [two]
        await store.hold_queue_entry(one, False)
        assert await store.flush_queue(now, one) == 1
        soon = now + MINUTE / 2
        assert [e.id for e in await store.claim_queue("s", soon, soon, 5)] == [one]
        await store.bounce_queue_entry(two, "bounced by the administrator", now)
        entry = await store.get_queue_entry(two)
        assert {r.status for r in entry.recipients} == {FAILED}
        assert entry.recipients[0].last_error == "bounced by the administrator"
        await store.delete_queue_entry(one)
        with pytest.raises(NotFound):
            await store.delete_queue_entry(one)
        with pytest.raises(NotFound):
            await store.hold_queue_entry(one, True)
        assert [e.id for e in await store.list_queue()] == [two]

    backend.run(body)
