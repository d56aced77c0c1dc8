"""Contract tests of the MTA-STS policy cache: kept per domain, replaced, expired ones
dropped, and still there after the store is opened again."""

from __future__ import annotations

from datetime import timedelta

from poczta.store import MailStore
from poczta.store.base import CachedStsPolicy
from tests.store.store_helpers import WHEN, Backend

DAY = timedelta(days=1)
TEXT = "version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n"


def cached(domain: str, policy_id: str = "one", days: int = 1) -> CachedStsPolicy:
    return CachedStsPolicy(domain, policy_id, TEXT, WHEN, WHEN + days * DAY)


def test_a_policy_is_kept_per_domain_and_replaced(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        assert await store.mta_sts_policy("example.org") is None
        await store.save_mta_sts_policy(cached("example.org"), WHEN)
        await store.save_mta_sts_policy(cached("example.net", "other"), WHEN)
        assert await store.mta_sts_policy("Example.ORG") == cached("example.org")
        await store.save_mta_sts_policy(cached("example.org", "two", days=7), WHEN)
        assert await store.mta_sts_policy("example.org") == cached("example.org", "two", 7)
        found = await store.mta_sts_policy("example.net")
        assert found is not None and found.policy_id == "other"

    backend.run(body)


def test_saving_drops_the_policies_that_expired(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        await store.save_mta_sts_policy(cached("short.example", days=1), WHEN)
        await store.save_mta_sts_policy(cached("long.example", days=30), WHEN)
        later = WHEN + 2 * DAY
        fresh = CachedStsPolicy("new.example", "one", TEXT, later, later + DAY)
        await store.save_mta_sts_policy(fresh, later)
        assert await store.mta_sts_policy("short.example") is None
        assert await store.mta_sts_policy("long.example") is not None
        assert await store.mta_sts_policy("new.example") is not None

    backend.run(body)


def test_a_policy_survives_reopening_the_store(backend: Backend) -> None:
    async def save(store: MailStore) -> None:
        await store.save_mta_sts_policy(cached("example.org"), WHEN)

    async def read(store: MailStore) -> CachedStsPolicy | None:
        return await store.mta_sts_policy("example.org")

    backend.run(save)
    assert backend.run(read) == cached("example.org")
