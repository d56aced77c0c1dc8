"""The quota at the end of DATA on every backend: who gets a copy, what the sender is told.

On PostgreSQL the check is part of the delivery (`QuotaCheckingStore`), on SQLite a read
before it; these tests hold both to the same answers as the policy's in tests/test_quota.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from poczta.delivery import Delivery, DeliveryPlan
from poczta.quota import OverQuota, Quotas
from poczta.store import MailStore, UserId
from poczta.store.base import QuotaUsage
from tests.store.store_helpers import Backend, make_message

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
MESSAGE = make_message(1, size=2000)


async def users(store: MailStore, *names: str) -> list[UserId]:
    await store.add_domain("example.test")
    return [await store.add_user(f"{name}@example.test", "x", "x") for name in names]


async def plan_for(delivery: Delivery, *addresses: str) -> DeliveryPlan:
    plan = DeliveryPlan()
    for address in addresses:
        plan.add(await delivery.classify(address))
    return plan


async def usage(store: MailStore, user: UserId) -> QuotaUsage:
    return (await store.quota_states([user]))[user].usage


@pytest.mark.parametrize("permanent", [False, True])
def test_a_message_no_recipient_has_room_for_is_refused_and_nothing_is_stored(
    backend: Backend, permanent: bool
) -> None:
    async def body(store: MailStore) -> tuple[str, QuotaUsage, int]:
        [ann] = await users(store, "ann")
        await store.set_quota(ann, {"storage": len(MESSAGE)})  # no room for Return-Path too
        delivery = Delivery(store, cache_ttl=0, quotas=Quotas(store, permanent=permanent))
        plan = await plan_for(delivery, "ann@example.test")
        with pytest.raises(OverQuota) as info:
            await delivery.deliver(MESSAGE, plan, "carol@remote.test", NOW, quota=True)
        refusal = info.value.refusal
        inbox = await store.get_mailbox(ann, "INBOX")
        return f"{refusal.code} {refusal.enhanced}", await usage(store, ann), inbox.uidnext

    expected = "552 5.2.2" if permanent else "452 4.2.2"
    assert backend.run(body) == (expected, QuotaUsage(0, 0), 1)


def test_the_users_with_room_get_the_message_and_the_full_one_a_bounce_instead(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> tuple[list[int], list[QuotaUsage], int]:
        ann, ben, cid, sue = await users(store, "ann", "ben", "cid", "sue")
        await store.set_quota(ben, {"messages": 1})
        delivery = Delivery(store, cache_ttl=0, hostname="mx.example.test")
        everyone = ("ann@example.test", "ben@example.test", "cid@example.test")
        for _ in range(2):  # the second fills ben's one message: no copy for ben
            plan = await plan_for(delivery, *everyone)
            await delivery.deliver(MESSAGE, plan, "sue@example.test", NOW, quota=True)
        counts = [(await store.get_mailbox(u, "INBOX")).messages for u in (ann, ben, cid)]
        reports = (await store.get_mailbox(sue, "INBOX")).messages
        return counts, [await usage(store, u) for u in (ann, ben)], reports

    counts, (ann_usage, ben_usage), reports = backend.run(body)
    assert counts == [2, 1, 2]
    assert ann_usage.messages == 2 and ben_usage.messages == 1
    assert ann_usage.storage == 2 * ben_usage.storage > 2 * len(MESSAGE)
    assert reports == 1  # the bounce naming ben


def test_a_limit_set_after_rcpt_is_what_data_is_held_to(backend: Backend) -> None:
    async def body(store: MailStore) -> tuple[bool, bool, int]:
        [ann] = await users(store, "ann")
        delivery = Delivery(store, cache_ttl=0)
        verdict = await delivery.classify("ann@example.test")
        accepted_at_rcpt = await delivery.recipient_quota(verdict) is None
        await store.set_quota(ann, {"messages": 0, "storage": 100})  # between RCPT and DATA
        plan = await plan_for(delivery, "ann@example.test")
        try:
            await delivery.deliver(MESSAGE, plan, "carol@remote.test", NOW, quota=True)
            refused = False
        except OverQuota:
            refused = True
        return accepted_at_rcpt, refused, (await store.get_mailbox(ann, "INBOX")).messages

    assert backend.run(body) == (True, True, 0)


def test_without_the_check_a_full_user_still_gets_the_message(backend: Backend) -> None:
    async def body(store: MailStore) -> int:
        [ann] = await users(store, "ann")
        await store.set_quota(ann, {"messages": 1, "storage": 1})
        delivery = Delivery(store, cache_ttl=0)
        for _ in range(2):
            plan = await plan_for(delivery, "ann@example.test")
            await delivery.deliver(MESSAGE, plan, "carol@remote.test", NOW)
        return (await store.get_mailbox(ann, "INBOX")).messages

    assert backend.run(body) == 2
