"""Contract tests of the state of the limits shared by every process and node: failed
logins, POP3 maildrop locks and per-IP connection counts (`SharedLimits`), on each
backend; and what this process does with them (`poczta.leases`)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import pytest

from poczta.accounts import Failures, LoginThrottle
from poczta.leases import LeaseKeeper, SharedConnectionLimiter
from poczta.queue.claims import RunnerName, this_host
from poczta.store import MailStore, StoreUnavailable
from poczta.store.base import SharedLimits
from tests.clock import Clock
from tests.store.store_helpers import Backend

T0 = 1_700_000_000.0
CAPS = Failures(11, 6, 32)
A, B = "node-a:h:1.1:aaaa", "node-b:h:2.2:bbbb"  # holders of another machine


async def _open(
    limits: SharedLimits, ip: str, holder: str, limit: int, now: float, until: float
) -> bool:
    (counted,) = await limits.count_connections(holder, {}, [ip], limit, now, until)
    return counted


async def _close(limits: SharedLimits, ip: str, holder: str) -> None:
    assert await limits.count_connections(holder, {ip: 1}, [], 1, T0, T0) == []


def _shared(backend: Backend, body: object) -> None:
    async def run(store: MailStore) -> None:
        limits = await store.shared_limits()
        assert limits is await store.shared_limits()
        await body(limits)  # type: ignore[operator]

    backend.run(run)


def test_failures_count_per_network_pair_and_account_within_the_window(
    backend: Backend,
) -> None:
    async def body(limits: SharedLimits) -> None:
        assert await limits.login_failures("192.0.2.1", "bob", T0 - 300, CAPS) == (0, 0, 0)
        for n in range(3):
            counts = await limits.add_login_failure("192.0.2.1", "bob", T0 + n, T0 - 300, CAPS)
            assert counts == (n + 1, n + 1, n + 1)
        await limits.add_login_failure("192.0.2.1", "carol", T0 + 3, T0 - 300, CAPS)
        await limits.add_login_failure("198.51.100.7", "bob", T0 + 4, T0 - 300, CAPS)
        assert await limits.login_failures("192.0.2.1", "bob", T0 - 300, CAPS) == (4, 3, 4)
        assert await limits.login_failures("198.51.100.7", "bob", T0 - 300, CAPS) == (1, 1, 4)
        # the window moves past the first two
        assert await limits.login_failures("192.0.2.1", "bob", T0 + 1, CAPS) == (2, 1, 2)

    _shared(backend, body)


def test_a_success_forgives_the_pair_only(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        for n in range(4):
            await limits.add_login_failure("192.0.2.1", "bob", T0 + n, T0 - 300, CAPS)
        await limits.forgive_login_failures("192.0.2.1", "bob")
        assert await limits.login_failures("192.0.2.1", "bob", T0 - 300, CAPS) == (4, 0, 4)
        counts = await limits.add_login_failure("192.0.2.1", "bob", T0 + 9, T0 - 300, CAPS)
        assert counts == (5, 1, 5)

    _shared(backend, body)


def test_counts_stop_at_their_caps_and_old_failures_are_forgotten(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        caps = Failures(3, 2, 4)
        for n in range(6):
            await limits.add_login_failure("192.0.2.1", "bob", T0 + n, T0 - 300, caps)
        assert await limits.login_failures("192.0.2.1", "bob", T0 - 300, caps) == caps
        # a failure much later forgets the others: they are gone, not just not counted
        await limits.add_login_failure("192.0.2.9", "eve", T0 + 1000, T0 + 700, caps)
        assert await limits.login_failures("192.0.2.1", "bob", 0.0, caps) == (0, 0, 0)

    _shared(backend, body)


def test_the_store_counts_as_the_in_memory_throttle_does(backend: Backend) -> None:
    """One rule, two places for its counts: a random run of failures and successes over a
    few clients and accounts gets the same counts from both at every step."""
    clock = Clock(T0)
    memory = LoginThrottle(
        window=60.0, max_failures_per_ip=4, max_failures_per_ip_account=2, clock=clock
    )
    rng = random.Random(13)
    clients = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2:1"]
    accounts = ["bob@example.test", "Bob@Example.Test", "carol", "nobody@example.test"]

    async def body(limits: SharedLimits) -> None:
        for _ in range(150):
            clock.now += rng.choice((0.5, 1.0, 7.0, 25.0))
            ip, account = rng.choice(clients), rng.choice(accounts)
            network, name = memory.keys(ip, account)
            since = clock.now - memory.window
            if rng.random() < 0.15:
                memory.record_success(ip, account)
                await limits.forgive_login_failures(network, name)
            elif rng.random() < 0.7:
                memory.record_failure(ip, account)
                shared = await limits.add_login_failure(
                    network, name, clock.now, since, memory.caps
                )
                assert shared == memory.failures(ip, account)
            shared = await limits.login_failures(network, name, since, memory.caps)
            assert shared == memory.failures(ip, account)
            assert memory.blocks(shared) == memory.is_blocked(ip, account)

    _shared(backend, body)


def test_a_maildrop_has_one_holder_until_its_lease_runs_out(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        assert await limits.take_maildrop("bob", A, T0, T0 + 60) == A
        assert await limits.take_maildrop("bob", B, T0 + 1, T0 + 61) == A
        assert await limits.take_maildrop("carol", B, T0 + 1, T0 + 61) == B
        await limits.release_maildrop("bob", B)  # not B's to release
        assert await limits.take_maildrop("bob", B, T0 + 2, T0 + 62) == A
        await limits.renew_leases(A, T0 + 120, T0 - 60)
        assert await limits.take_maildrop("bob", B, T0 + 100, T0 + 160) == A
        assert await limits.take_maildrop("bob", B, T0 + 120, T0 + 180) == B  # ran out
        await limits.release_maildrop("bob", B)
        assert await limits.take_maildrop("bob", A, T0 + 121, T0 + 181) == A

    _shared(backend, body)


def test_a_maildrop_is_taken_from_a_gone_holder_only_while_it_holds_it(
    backend: Backend,
) -> None:
    async def body(limits: SharedLimits) -> None:
        await limits.take_maildrop("bob", A, T0, T0 + 60)
        assert not await limits.take_maildrop_from("bob", B, "someone-else", T0 + 60)
        assert await limits.take_maildrop_from("bob", B, A, T0 + 60)
        assert await limits.take_maildrop("bob", A, T0 + 1, T0 + 61) == B
        assert sorted(await limits.lease_holders()) == [B]
        assert await limits.drop_holders([B]) == 1
        assert await limits.take_maildrop("bob", A, T0 + 1, T0 + 61) == A

    _shared(backend, body)


def test_connections_per_ip_are_counted_over_every_live_holder(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        ip = "192.0.2.7"
        assert await _open(limits, ip, A, 3, T0, T0 + 60)
        assert await _open(limits, ip, B, 3, T0, T0 + 30)
        assert await _open(limits, ip, A, 3, T0, T0 + 60)
        assert not await _open(limits, ip, B, 3, T0, T0 + 30)
        assert await _open(limits, "192.0.2.8", B, 3, T0, T0 + 30)
        assert sorted(await limits.connection_holders(ip)) == [A, B]
        await _close(limits, ip, A)
        assert await _open(limits, ip, B, 3, T0, T0 + 30)
        assert not await _open(limits, ip, A, 3, T0 + 1, T0 + 61)
        # B's lease runs out: its two connections no longer count
        assert await _open(limits, ip, A, 3, T0 + 30, T0 + 90)
        assert await limits.drop_holders([A]) == 1
        assert await limits.connection_holders(ip) == [B]

    _shared(backend, body)


def test_a_batch_counts_its_closes_first_then_its_opens_in_order(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        ip, other = "192.0.2.7", "192.0.2.8"
        assert await limits.count_connections(A, {}, [ip, other, ip], 2, T0, T0 + 60) == [
            True,
            True,
            True,
        ]
        # one of ip's two ends, so two of three new ones fit; other's closes cannot go below 0
        answers = await limits.count_connections(
            A, {ip: 1, other: 5}, [other, ip, ip, other, other], 2, T0, T0 + 60
        )
        assert answers == [True, True, False, True, False]
        assert await limits.count_connections(B, {}, [ip], 3, T0, T0 + 60) == [True]
        assert await limits.count_connections(B, {}, [ip], 3, T0, T0 + 60) == [False]

    _shared(backend, body)


def test_renewal_keeps_a_holder_and_drops_what_ran_out_long_ago(backend: Backend) -> None:
    async def body(limits: SharedLimits) -> None:
        ip = "192.0.2.7"
        await _open(limits, ip, A, 2, T0, T0 + 60)
        await _open(limits, "192.0.2.8", A, 2, T0, T0 + 60)
        await _close(limits, "192.0.2.8", A)
        await _open(limits, ip, B, 2, T0, T0 + 60)
        await limits.take_maildrop("bob", B, T0, T0 + 60)
        await limits.renew_leases(A, T0 + 200, T0 - 60)
        assert not await _open(limits, ip, A, 2, T0 + 59, T0 + 200)
        assert await limits.connection_holders("192.0.2.8") == []
        assert sorted(await limits.lease_holders()) == [A, B]
        await limits.renew_leases(A, T0 + 300, T0 + 61)  # B ran out before T0 + 61
        assert await limits.lease_holders() == [A]
        assert await limits.take_maildrop("bob", A, T0 + 100, T0 + 300) == A

    _shared(backend, body)


def test_concurrent_accepts_at_two_nodes_never_pass_the_limit(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        other = await backend.open()  # a second node (or worker) on the same store
        try:
            first, second = await store.shared_limits(), await other.shared_limits()
            tries = [
                (first if n % 2 else second).count_connections(
                    A if n % 2 else B, {}, ["192.0.2.7"] * 3 + ["192.0.2.8"], 7, T0, T0 + 60
                )
                for n in range(10)
            ]
            answers = await asyncio.gather(*tries)
            assert sum(sum(batch[:3]) for batch in answers) == 7
            assert sum(batch[3] for batch in answers) == 7
        finally:
            await other.close()

    backend.run(body)


def _gone_holder() -> str:
    """The name of a process of this machine that has ended."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(RunnerName("mx", this_host(), int(child.stdout), 1, "dead"))


def test_a_gone_holder_of_this_machine_loses_its_hold_at_once(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        limits = await store.shared_limits()
        dead, clock = _gone_holder(), Clock(T0)
        await limits.take_maildrop("bob@example.test", dead, T0, T0 + 600)
        keeper = LeaseKeeper(limits, "mx", lease=60.0, clock=clock)
        other = LeaseKeeper(limits, "mx", lease=60.0, clock=clock)  # alive: this process
        assert await keeper.take_maildrop("bob@example.test")
        assert not await other.take_maildrop("bob@example.test")
        # connections: the dead holder's are dropped once they would refuse one
        for _ in range(2):
            assert await _open(limits, "192.0.2.7", dead, 2, T0, T0 + 600)
        limiter = SharedConnectionLimiter(keeper, max_per_ip=2)
        assert await limiter.acquire("192.0.2.7")
        assert await limiter.acquire("192.0.2.7")
        assert not await limiter.acquire("192.0.2.7")
        await limiter.release("192.0.2.7")
        assert await limiter.acquire("192.0.2.7")
        assert dead not in await limits.lease_holders()

    backend.run(body)


def test_the_keeper_renews_and_drops_the_gone_and_what_it_holds_at_stop(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        limits = await store.shared_limits()
        clock = Clock(T0)
        keeper = LeaseKeeper(limits, "mx", lease=60.0, clock=clock)
        await _open(limits, "192.0.2.7", _gone_holder(), 5, T0, T0 + 600)
        assert await keeper.take_maildrop("bob@example.test")
        clock.now += 50
        await keeper.renew()  # the lease now lasts to T0 + 110
        assert await limits.lease_holders() == [keeper.holder]
        assert await limits.take_maildrop("bob@example.test", A, T0 + 100, T0 + 200) != A
        keeper.start()
        await keeper.stop()
        assert await limits.lease_holders() == []

    backend.run(body)


def test_the_connection_limit_fails_open_when_the_store_is_down(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        limits = await store.shared_limits()
        keeper = LeaseKeeper(limits, "mx", lease=60.0)
        limiter = SharedConnectionLimiter(keeper, max_per_ip=1)
        assert await limiter.acquire("192.0.2.7")
        await store.close()
        with pytest.raises(StoreUnavailable):
            await limits.login_failures("192.0.2.7", "bob", 0.0, CAPS)
        assert await limiter.acquire("192.0.2.7")  # let in, uncounted
        assert await limiter.acquire("192.0.2.7")
        await limiter.release("192.0.2.7")  # counts nothing for those
        await limiter.release("192.0.2.7")
        with pytest.raises(StoreUnavailable):
            await keeper.take_maildrop("bob@example.test")

    backend.run(body)


class _CountingStore:
    """A `LeaseStore` that counts its calls and can be made to fail."""

    def __init__(self, limits: SharedLimits) -> None:
        self.limits = limits
        self.calls = 0
        self.failing = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.limits, name)

    async def count_connections(self, *args: object) -> list[bool]:
        self.calls += 1
        await asyncio.sleep(0.01)  # a round trip: what arrives meanwhile waits for the next
        if self.failing:
            raise StoreUnavailable("down")
        return await self.limits.count_connections(*args)  # type: ignore[arg-type]


def test_concurrent_accepts_share_round_trips_and_never_pass_the_limit(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        counting = _CountingStore(await store.shared_limits())
        keeper = LeaseKeeper(counting, "mx", lease=60.0)  # type: ignore[arg-type]
        limiter = SharedConnectionLimiter(keeper, max_per_ip=20)
        answers = await asyncio.gather(*(limiter.acquire("192.0.2.7") for _ in range(30)))
        assert sum(answers) == 20
        assert counting.calls < 10  # 30 accepts (and the refused ones' gone-holder checks)
        for _ in range(5):
            await limiter.release("192.0.2.7")
        assert sum(await asyncio.gather(*(limiter.acquire("192.0.2.7") for _ in range(6)))) == 5

    backend.run(body)


def test_an_accept_given_up_gives_its_count_back(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        counting = _CountingStore(await store.shared_limits())
        keeper = LeaseKeeper(counting, "mx", lease=60.0)  # type: ignore[arg-type]
        limiter = SharedConnectionLimiter(keeper, max_per_ip=1)
        waiting = asyncio.ensure_future(limiter.acquire("192.0.2.7"))
        await asyncio.sleep(0)
        waiting.cancel()  # e.g. the server stops while the count is under way
        await asyncio.sleep(0.05)
        assert await limiter.acquire("192.0.2.7")

    backend.run(body)


def test_closes_missed_while_the_store_failed_are_counted_at_the_renewal(
    backend: Backend,
) -> None:
    async def body(store: MailStore) -> None:
        counting = _CountingStore(await store.shared_limits())
        keeper = LeaseKeeper(counting, "mx", lease=60.0)  # type: ignore[arg-type]
        limiter = SharedConnectionLimiter(keeper, max_per_ip=1)
        assert await limiter.acquire("192.0.2.7")
        counting.failing = True
        await limiter.release("192.0.2.7")
        await asyncio.sleep(0.05)
        counting.failing = False
        assert not await limiter.acquire("192.0.2.7")  # the close is not counted yet
        await limiter.settle()
        await asyncio.sleep(0.05)
        assert await limiter.acquire("192.0.2.7")

    backend.run(body)
