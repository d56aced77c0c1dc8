"""The MTA-STS policy cache: when a policy is fetched, kept, refreshed and still used.

A real store, an in-memory zone and a stand-in policy source that counts its fetches;
time is a test clock moved by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from poczta.dns import ZoneResolver
from poczta.queue.mta_sts import StsMode, StsPolicy
from poczta.queue.mta_sts_cache import MtaStsPolicies
from poczta.queue.mta_sts_fetch import PolicyFetchError
from poczta.store.sqlite.store import SqliteStore

DOMAIN = "example.org"
TXT = f"_mta-sts.{DOMAIN}"


def policy_text(mode: str = "enforce", max_age: int = 86400, mx: str = "mx.example.org") -> bytes:
    return f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: {max_age}\n".encode()


class Source:
    """Serves `text` (or fails when it is None) and counts the fetches."""

    def __init__(self, text: bytes | None = None) -> None:
        self.text = text if text is not None else policy_text()
        self.down = False
        self.fetches = 0

    async def fetch(self, domain: str) -> bytes:
        self.fetches += 1
        await asyncio.sleep(0)
        if self.down:
            raise PolicyFetchError(f"mta-sts.{domain}: connection refused")
        return self.text


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.zone = ZoneResolver.from_mapping({TXT: {"TXT": ["v=STSv1; id=one"]}})
        self.source = Source()
        self.clock = Clock()
        self.policies = self.restart()

    def restart(self) -> MtaStsPolicies:
        """A new cache over the same store, as after a restart of the server."""
        self.policies = MtaStsPolicies(self.zone, self.store, self.source, self.clock)
        return self.policies

    def publish(self, record: str | None) -> None:
        self.zone.records.pop(TXT, None)
        if record is not None:
            self.zone.add(TXT, "TXT", record)

    async def mode(self, domain: str = DOMAIN) -> StsMode | None:
        found = await self.policies.policy(domain)
        return found.mode if found is not None else None


def run(tmp_path: Path, test: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            await test(World(store))
        finally:
            await store.close()

    asyncio.run(main())


def test_a_domain_without_the_txt_record_has_no_policy_and_nothing_is_fetched(
    tmp_path: Path,
) -> None:
    async def test(w: World) -> None:
        assert await w.policies.policy("elsewhere.test") is None
        w.publish("v=spf1 -all")
        assert await w.mode() is None
        assert w.source.fetches == 0

    run(tmp_path, test)


def test_a_policy_is_fetched_once_and_used_while_the_id_stands(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        expected = StsPolicy(StsMode.ENFORCE, 86400, ("mx.example.org",))
        assert await w.policies.policy("Example.Org.") == expected
        w.clock.advance(3600)
        assert await w.policies.policy(DOMAIN) == expected
        assert w.source.fetches == 1
        stored = await w.store.mta_sts_policy(DOMAIN)
        assert stored is not None and stored.policy_id == "one"
        assert stored.expires == stored.fetched + timedelta(seconds=86400)

    run(tmp_path, test)


def test_concurrent_deliveries_wait_for_one_fetch(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        modes = await asyncio.gather(*(w.mode() for _ in range(5)))
        assert modes == [StsMode.ENFORCE] * 5 and w.source.fetches == 1

    run(tmp_path, test)


def test_a_new_id_fetches_the_new_policy(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        assert await w.mode() is StsMode.ENFORCE
        w.source.text = policy_text("testing")
        assert await w.mode() is StsMode.ENFORCE  # same id: the cached one
        w.publish("v=STSv1; id=two")
        assert await w.mode() is StsMode.TESTING and w.source.fetches == 2
        stored = await w.store.mta_sts_policy(DOMAIN)
        assert stored is not None and stored.policy_id == "two"

    run(tmp_path, test)


def test_a_restart_keeps_the_policy_and_fetches_nothing(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        assert await w.mode() is StsMode.ENFORCE
        w.restart()
        assert await w.mode() is StsMode.ENFORCE and w.source.fetches == 1

    run(tmp_path, test)


def test_an_unexpired_policy_outlives_its_record_and_its_server(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        assert await w.mode() is StsMode.ENFORCE
        w.restart()
        w.source.down = True
        w.publish("v=STSv1; id=changed")  # a new id, but no policy to be had
        assert await w.mode() is StsMode.ENFORCE
        w.publish(None)  # the record gone
        assert await w.mode() is StsMode.ENFORCE
        w.zone.servfail.add(TXT)  # the lookup failing
        assert await w.mode() is StsMode.ENFORCE
        w.clock.advance(86400)  # but not past its max_age
        assert await w.mode() is None

    run(tmp_path, test)


def test_a_failed_fetch_is_not_retried_at_once(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.source.down = True
        assert await w.mode() is None
        assert await w.mode() is None
        assert w.source.fetches == 1
        w.source.down = False
        w.clock.advance(301)
        assert await w.mode() is StsMode.ENFORCE and w.source.fetches == 2

    run(tmp_path, test)


def test_a_policy_that_does_not_parse_is_not_used(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.source.text = b"version: STSv1\nmode: enforce\nmax_age: 86400\n"  # no mx
        assert await w.mode() is None
        assert await w.store.mta_sts_policy(DOMAIN) is None

    run(tmp_path, test)


def test_an_unchanged_policy_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.source.text = policy_text(max_age=7200)
        assert await w.mode() is StsMode.ENFORCE
        w.clock.advance(3500)
        assert await w.mode() is StsMode.ENFORCE and w.source.fetches == 1
        w.clock.advance(200)  # past half its max_age: fetched again, its life extended
        assert await w.mode() is StsMode.ENFORCE and w.source.fetches == 2
        w.source.down = True
        w.clock.advance(7000)  # long past the first fetch's expiry, within the second's
        assert await w.mode() is StsMode.ENFORCE

    run(tmp_path, test)


def test_mode_none_replaces_an_enforced_policy(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        assert await w.mode() is StsMode.ENFORCE
        w.source.text = b"version: STSv1\nmode: none\nmax_age: 86400\n"
        w.publish("v=STSv1; id=off")
        assert await w.mode() is StsMode.NONE

    run(tmp_path, test)
