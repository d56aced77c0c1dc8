"""Several queue runners on one queue: the claims of a runner gone are taken back, those
of a live one never; two runners deliver each entry once and send each DSN once.

A "dead" runner is named after a process that has ended (`dead_runner`); a live sibling
after this very process. Two runners side by side each have a store of their own on the
same database, as two worker processes have.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from poczta.delivery import Delivery, DeliveryPlan
from poczta.queue.claims import runner_name
from poczta.queue.runner import QueueRunner
from poczta.smtp.events import Accept, Reject
from poczta.store.base import QueueEntry
from poczta.store.sqlite.store import SqliteStore
from tests.queue.peer import ScriptedMx, serving
from tests.queue.test_claims import ended_pid, name_of, start_time
from tests.queue.test_runner import (
    MESSAGE,
    SENDER,
    Setup,
    dsn_fields,
    make_runner,
    run,
    setup,
)

DAY = timedelta(days=1)


@pytest.fixture
def dead_runner() -> Iterator[str]:
    """The name a runner of a process of this machine that has ended had."""
    yield name_of(ended_pid())


async def hold(s: Setup, owner: str, count: int) -> list[QueueEntry]:
    """Queue `count` messages and claim them all for `owner`, for a day."""
    for n in range(count):
        await s.queue(f"held{n}@remote.test")
    now = s.clock()
    claimed = await s.store.claim_queue(owner, now, now + DAY, count)
    assert len(claimed) == count
    return claimed


@asynccontextmanager
async def running(runner: QueueRunner) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def received(mx: ScriptedMx) -> list[str]:
    return [r for message in mx.messages for r in message.recipients]


def test_a_starting_runner_takes_back_the_claims_of_a_runner_gone(
    tmp_path: Path, dead_runner: str
) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port, poll=0.05) as s:
            await hold(s, dead_runner, 3)
            assert await s.runner.run_once() == 0  # claimed for a day: not due
            async with running(s.runner):
                await until(lambda: len(mx.messages) == 3)
                while await s.store.list_queue():
                    await asyncio.sleep(0.01)
            assert sorted(received(mx)) == [f"held{n}@remote.test" for n in range(3)]

    run(test)


def test_a_live_siblings_claims_are_left_until_their_lease_runs_out(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        async with (
            serving(mx, "127.0.0.1", 0) as port,
            setup(tmp_path, port, poll=0.05, holder_check=0.01) as s,
        ):
            sibling = runner_name("out")  # another runner of this (live) process
            held = await hold(s, sibling, 2)
            async with running(s.runner):
                await s.queue("free@remote.test")
                await until(lambda: received(mx) == ["free@remote.test"])
                for _ in range(5):  # the runner's start and several looks for holders gone
                    await asyncio.sleep(0.02)
                claims = [(await s.store.get_queue_entry(e.id)).claimed_by for e in held]
                assert claims == [sibling, sibling]
                assert received(mx) == ["free@remote.test"]
                s.clock.advance(DAY.total_seconds() + 1)  # the sibling stopped renewing
                await until(lambda: len(mx.messages) == 3)
            assert sorted(received(mx)) == [
                "free@remote.test",
                "held0@remote.test",
                "held1@remote.test",
            ]

    run(test)


def test_a_running_runner_takes_back_the_claims_of_a_sibling_that_dies(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        sibling = subprocess.Popen(["sleep", "60"])  # a worker holding claims, until killed
        try:
            async with (
                serving(mx, "127.0.0.1", 0) as port,
                setup(tmp_path, port, poll=0.05, holder_check=0.02) as s,
            ):
                await hold(s, name_of(sibling.pid, start_time(sibling.pid)), 2)
                async with running(s.runner):
                    await s.queue("free@remote.test")
                    await until(lambda: len(mx.messages) == 1)
                    for _ in range(5):  # several looks for holders gone: it lives
                        await asyncio.sleep(0.02)
                    assert received(mx) == ["free@remote.test"]
                    sibling.kill()
                    sibling.wait()
                    await until(lambda: len(mx.messages) == 3)
                expected = ["free@remote.test", "held0@remote.test", "held1@remote.test"]
                assert sorted(received(mx)) == expected
        finally:
            sibling.kill()
            sibling.wait()

    run(test)


def test_a_stopped_runner_leaves_no_claim(tmp_path: Path) -> None:
    async def test() -> None:
        gate, connected = asyncio.Event(), asyncio.Event()

        async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.set()
            await gate.wait()  # holds the attempt before the greeting

        server = await asyncio.start_server(stuck, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, setup(tmp_path, port, poll=0.05) as s:
            queue_id = await s.queue("bob@remote.test")
            async with running(s.runner):
                await connected.wait()  # the entry is claimed and being tried
            assert (await s.store.get_queue_entry(queue_id)).claimed_by is None
            assert await s.store.claim_holders() == []
            gate.set()

    run(test)


@asynccontextmanager
async def sibling_of(
    s: Setup, tmp_path: Path, port: int, **settings: float
) -> AsyncIterator[QueueRunner]:
    """A second runner on the same database, through a store of its own."""
    store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
    runner = make_runner(store, Delivery(store, cache_ttl=0), port, s.clock, **settings)
    try:
        yield runner
    finally:
        await runner.deliverer.cache.close()
        await store.close()


def test_two_runners_deliver_each_entry_once_and_each_bounce_once(tmp_path: Path) -> None:
    good = [f"user{n}@remote.test" for n in range(120)]
    bad = [f"nobody{n}@remote.test" for n in range(20)]

    async def test() -> None:
        mx = ScriptedMx(
            rcpt=lambda a: Reject(550, "5.1.1", "no such user") if "nobody" in a else Accept()
        )
        settings = {"poll": 0.05, "batch": 20, "max_connections": 5, "max_per_domain": 5}
        async with (
            serving(mx, "127.0.0.1", 0) as port,
            setup(tmp_path, port, **settings) as s,
            sibling_of(s, tmp_path, port, **settings) as other,
        ):
            plans = [DeliveryPlan(remote=[address]) for address in good + bad]
            await asyncio.gather(*(s.delivery.deliver(MESSAGE, p, SENDER) for p in plans))
            attempts = {s.runner.owner: 0, other.owner: 0}
            for runner in (s.runner, other):
                count = counting(runner, attempts)
                runner.process = count  # type: ignore[method-assign]
            async with running(s.runner), running(other):
                while await s.store.list_queue():
                    await asyncio.sleep(0.02)
            assert sorted(received(mx)) == sorted(good)
            assert all(attempts.values()), attempts  # both took part
            bounces = await s.inbox(s.alice)
            failed = sorted(dsn_fields(b)[1]["Final-Recipient"] for b in bounces)
            assert failed == sorted(f"rfc822;{a}" for a in bad)

    run(test)


def counting(runner: QueueRunner, attempts: dict[str, int]) -> Callable[[QueueEntry], object]:
    process = runner.process

    async def count(entry: QueueEntry) -> None:
        attempts[runner.owner] += 1
        await process(entry)

    return count


def test_a_message_queued_wakes_the_runner_of_its_process(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        # a poll far longer than the test may take: only the wake-up can deliver in time
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port, poll=600) as s:
            s.delivery.on_queued = s.runner.wake  # as `poczta serve` wires it
            async with running(s.runner):
                await asyncio.sleep(0.1)  # the runner has looked once and waits
                await s.queue("bob@remote.test")
                await until(lambda: received(mx) == ["bob@remote.test"])

    run(test)


def test_a_runner_woken_as_it_is_stopped_stops(tmp_path: Path) -> None:
    """A stop that comes in the same turn of the loop as a wake-up (a message queued as
    the server shuts down) ends the runner; it is not lost to the wake-up."""

    async def test() -> None:
        async with setup(tmp_path, 9, poll=30) as s:
            for _ in range(20):
                task = asyncio.ensure_future(s.runner.run())
                await asyncio.sleep(0.05)  # idle, waiting for a wake-up or the poll
                s.runner.wake()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)

    run(test)
