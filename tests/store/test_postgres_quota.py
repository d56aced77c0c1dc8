"""The quota at the end of DATA on PostgreSQL holds for messages that arrive at once: the
delivery's statement reads the usage under its lock, so two messages for the last room,
on one node or on two sharing the database, are one stored and one refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

from poczta.delivery import Delivery, DeliveryPlan
from poczta.quota import OverQuota, Quotas
from poczta.store.base import QuotaUsage, UserId
from poczta.store.postgres.store import PostgresStore
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import store_settings
from tests.store.store_helpers import WHEN, make_message, with_user

WAIT = 30.0  # seconds: a bound for a hung test, not a measurement
ANN = "ann@example.test"


async def _deliver_at_once(deliveries: list[Delivery], first: int) -> list[bool]:
    """One message per delivery, all at the same moment: which were stored."""

    async def one(delivery: Delivery, n: int) -> bool:
        plan = DeliveryPlan()
        plan.add(await delivery.classify(ANN))
        try:
            await delivery.deliver(make_message(n), plan, "carol@remote.test", WHEN, quota=True)
        except OverQuota:
            return False
        return True

    sent = [one(d, first + n) for n, d in enumerate(deliveries)]
    return list(await asyncio.wait_for(asyncio.gather(*sent), WAIT))


async def _usage(store: PostgresStore, user: UserId) -> tuple[QuotaUsage, int]:
    inbox = await store.get_mailbox(user, "INBOX")
    return (await store.quota_states([user]))[user].usage, inbox.messages


def test_two_nodes_delivering_at_once_into_the_last_room_store_one(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> list[list[bool]]:
        nodes = [await PostgresStore.open(settings, tmp_path) for _ in range(2)]
        try:
            ann = await with_user(nodes[0], ANN)
            deliveries = [Delivery(node, cache_ttl=0, quotas=Quotas(node)) for node in nodes]
            rounds = []
            for n in range(1, 6):  # each round makes room for one more message
                await nodes[0].set_quota(ann, {"messages": n})
                rounds.append(await _deliver_at_once(deliveries, 10 * n))
            assert await _usage(nodes[1], ann) == (
                QuotaUsage(5 * len(make_message(10, 0)) + 5 * _return_path(), 5),
                5,
            )
            return rounds
        finally:
            for node in nodes:
                await node.close()

    assert [sorted(stored) for stored in asyncio.run(main())] == [[False, True]] * 5


def test_one_node_delivering_three_at_once_with_room_for_two_stores_two(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    size = len(make_message(1)) + _return_path()

    async def main() -> tuple[list[bool], tuple[QuotaUsage, int]]:
        store = await PostgresStore.open(settings, tmp_path)
        try:
            ann = await with_user(store, ANN)
            await store.set_quota(ann, {"storage": 2 * size})
            delivery = Delivery(store, cache_ttl=0, quotas=Quotas(store))
            stored = await _deliver_at_once([delivery] * 3, 1)
            return stored, await _usage(store, ann)
        finally:
            await store.close()

    stored, usage = asyncio.run(main())
    assert sorted(stored) == [False, True, True]
    assert usage == (QuotaUsage(2 * size, 2), 2)


def _return_path() -> int:
    """What final delivery adds before each local copy: `Return-Path: <sender>`."""
    return len(b"Return-Path: <carol@remote.test>\r\n")
