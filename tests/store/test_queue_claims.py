"""Contract tests of queue claims between runners: a result written for a claim another
runner took over is refused and leaves the new holder's state; renewals name their
entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from poczta.store import MailStore
from poczta.store.base import DELIVERED, PENDING, ClaimLost, NotFound, RecipientAttempt
from tests.store.store_helpers import Backend
from tests.store.test_store_queue import queued

MINUTE = timedelta(minutes=1)
CAROL = [RecipientAttempt("carol@remote.test", DELIVERED, "250 ok", 250, "2.0.0", "mx.r")]
DAVE = [RecipientAttempt("dave@remote.test", DELIVERED, "250 ok", 250, "2.0.0", "mx.r")]


def test_a_result_for_a_claim_taken_over_is_refused(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("node:a", now, now + 10 * MINUTE, 1)
        late = now + 11 * MINUTE  # a's lease ran out: b takes the entry
        [taken] = await store.claim_queue("node:b", late, late + 10 * MINUTE, 1)
        assert taken.id == queue_id
        with pytest.raises(ClaimLost):
            await store.record_attempt(queue_id, CAROL + DAVE, late, owner="node:a")
        with pytest.raises(ClaimLost):
            await store.record_attempt(queue_id, CAROL + DAVE, late, finish=True, owner="node:a")
        entry = await store.get_queue_entry(queue_id)
        assert [r.status for r in entry.recipients] == [PENDING, PENDING]
        assert [r.attempts for r in entry.recipients] == [0, 0]
        assert (entry.claimed_by, entry.claimed_until) == ("node:b", late + 10 * MINUTE)
        # the new holder's results are written
        assert not await store.record_attempt(queue_id, CAROL, late, owner="node:b")
        carol, dave = (await store.get_queue_entry(queue_id)).recipients
        assert (carol.status, dave.status) == (DELIVERED, PENDING)

    backend.run(body)


def test_a_result_for_an_entry_no_runner_claims_is_refused(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("node:b", now, now + 10 * MINUTE, 1)
        await store.reschedule(queue_id, "node:b", now + 5 * MINUTE, "451 later")
        with pytest.raises(ClaimLost):
            await store.record_attempt(queue_id, CAROL, now, owner="node:a")
        entry = await store.get_queue_entry(queue_id)
        assert [r.status for r in entry.recipients] == [PENDING, PENDING]
        assert (entry.claimed_by, entry.attempts) == (None, 1)

    backend.run(body)


def test_a_result_of_the_holder_finishes_and_one_for_a_finished_entry_is_not_found(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        queue_id = await queued(store)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("node:a", now, now + 10 * MINUTE, 1)
        assert await store.record_attempt(queue_id, CAROL + DAVE, now, finish=True, owner="node:a")
        assert await store.list_queue() == []
        with pytest.raises(NotFound):
            await store.record_attempt(queue_id, CAROL, now, owner="node:a")

    backend.run(body)


def test_a_renewal_extends_only_the_claims_it_names(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        one, two = await queued(store, 1), await queued(store, 2)
        now = datetime.now(UTC) + MINUTE
        await store.claim_queue("node:a", now, now + MINUTE, 2)
        assert await store.renew_claims("node:a", now + 60 * MINUTE, [one]) == 1
        assert await store.renew_claims("node:b", now + 60 * MINUTE, [two]) == 0  # not b's
        assert await store.renew_claims("node:a", now + 60 * MINUTE, []) == 0
        later = now + 2 * MINUTE  # the claim of `two` ran out, that of `one` did not
        assert [e.id for e in await store.claim_queue("other", later, later, 10)] == [two]
        assert (await store.get_queue_entry(one)).claimed_until == now + 60 * MINUTE

    backend.run(body)
