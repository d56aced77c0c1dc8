"""A runner that may have lost its lease: renewals failing (the store unreachable) or the
process paused past the lease. It starts no new attempt, its late results never
overwrite the next holder's, it says so in the log, and with a runner taking over in
between each recipient is still delivered once. An entry its own runner claims again
while the old attempt still runs is taken up, read afresh, once that attempt has ended.

The lease runs on the test clock (`MovingClock`): advancing it is the pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from poczta.queue.runner import QueueRunner
from poczta.store.base import DELIVERED, PENDING, QueueEntry, StoreUnavailable
from tests.queue.peer import ScriptedMx, serving
from tests.queue.test_runner import Setup, run, setup
from tests.queue.test_runner_claims import received, running, sibling_of, until

CLAIM_TIME = 3.0  # seconds: renewals every second, real time
MARGIN = 1.0
HOUR = timedelta(hours=1)


def lost_leases(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "queue.lease_lost"
    ]


def processed(runner: QueueRunner) -> asyncio.Event:
    """Set each time the runner is done with an entry."""
    done = asyncio.Event()
    process = runner.process

    async def then_tell(entry: QueueEntry) -> None:
        try:
            await process(entry)
        finally:
            done.set()

    runner.process = then_tell  # type: ignore[method-assign]
    return done


def unreachable_after_the_claim(s: Setup) -> list[object]:
    """Make the runner's store fail every renewal and every claim after the first one (it
    cannot be reached); the list counts the renewals tried."""
    tries: list[object] = []
    claim = s.store.claim_queue
    claimed: list[QueueEntry] = []

    async def renew(*args: object) -> int:
        tries.append(args)
        raise StoreUnavailable("the database did not answer in time")

    async def claim_once(*args: object) -> list[QueueEntry]:
        if claimed:
            raise StoreUnavailable("the database did not answer in time")
        claimed.extend(await claim(*args))  # type: ignore[arg-type]
        return claimed

    s.store.renew_claims = renew  # type: ignore[method-assign]
    s.store.claim_queue = claim_once  # type: ignore[method-assign]
    return tries


@dataclass
class GatedMx:
    """gated.test's MX: it greets each client once `gate` is open."""

    mx: ScriptedMx = field(default_factory=ScriptedMx)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def connected(self) -> int:
        return len(self.writers)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.gate.wait()
        await self.mx.session(reader, writer)

    @asynccontextmanager
    async def serving(self, port: int) -> AsyncIterator[None]:
        """Listening on `port`; then every session is ended (a runner that gave up an
        entry in the middle of its attempt leaves its connection to the server)."""
        server = await asyncio.start_server(self.session, "127.0.0.2", port)
        try:
            async with server:
                yield
        finally:
            for writer in self.writers:
                writer.close()


def test_a_runner_whose_renewals_fail_past_the_lease_starts_no_new_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")

    async def test() -> None:
        fast = ScriptedMx()
        settings = {"claim_time": CLAIM_TIME, "lease_margin": MARGIN, "holder_check": 0.02}
        async with (
            serving(fast, "127.0.0.1", 0) as port,
            setup(tmp_path, port, max_connections=1, **settings) as s,
        ):
            tries = unreachable_after_the_claim(s)
            done = processed(s.runner)
            gated = GatedMx()
            async with gated.serving(port), running(s.runner):
                # gated.test first; remote.test waits for the only connection
                queue_id = await s.queue("bob@gated.test", "carol@remote.test")
                await until(lambda: gated.connected == 1)
                await until(lambda: tries)  # a renewal failed
                s.clock.advance(CLAIM_TIME)  # and the lease ran out meanwhile
                await until(lambda: lost_leases(caplog))
                gated.gate.set()  # the attempt under way cannot be recalled: it ends
                await done.wait()
            assert received(gated.mx) == ["bob@gated.test"]
            assert fast.connections == 0  # no attempt started after the lease was lost
            entry = await s.store.get_queue_entry(queue_id)
            bob, carol = entry.recipients
            assert (bob.status, carol.status, carol.attempts) == (DELIVERED, PENDING, 0)
            [line] = lost_leases(caplog)
            assert (line["id"], line["owner"]) == (queue_id, s.runner.owner)

    run(test)


def test_a_late_result_does_not_overwrite_the_next_holders_claim(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")

    async def test() -> None:
        settings = {"claim_time": CLAIM_TIME, "lease_margin": MARGIN}
        async with (
            serving(ScriptedMx(), "127.0.0.1", 0) as port,
            setup(tmp_path, port, **settings) as s,
        ):
            done = processed(s.runner)
            gated = GatedMx()
            async with gated.serving(port), running(s.runner):
                queue_id = await s.queue("bob@gated.test")
                await until(lambda: gated.connected == 1)
                s.clock.advance(2 * CLAIM_TIME)  # paused past the lease: another runner
                now = s.clock()  # takes the entry
                [taken] = await s.store.claim_queue("other:runner", now, now + HOUR, 1)
                gated.gate.set()
                await done.wait()
            assert received(gated.mx) == ["bob@gated.test"]  # the one copy at the margin
            entry = await s.store.get_queue_entry(queue_id)
            assert (entry.claimed_by, entry.claimed_until) == ("other:runner", taken.claimed_until)
            [bob] = entry.recipients
            assert (bob.status, bob.attempts) == (PENDING, 0)  # the new holder decides
            reasons = [str(line["reason"]) for line in lost_leases(caplog)]
            assert any("claimed by another runner" in reason for reason in reasons), reasons

    run(test)


def test_two_runners_with_a_lapsed_lease_between_them_deliver_each_recipient_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")
    recipients = [f"user{n}@remote.test" for n in range(3)]

    async def test() -> None:
        mx = ScriptedMx()
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port, poll=0.05) as s:
            paused, resume = asyncio.Event(), asyncio.Event()
            read, claim = s.store.blobs.read, s.store.claim_queue

            async def stopped_before_the_attempt(*args: object, **kwargs: object) -> bytes:
                paused.set()
                await resume.wait()  # SIGSTOP ... SIGCONT
                return await read(*args, **kwargs)  # type: ignore[arg-type]

            async def stopped_claiming(*args: object) -> list[QueueEntry]:
                if paused.is_set():  # the whole runner is stopped, not only that entry
                    await resume.wait()
                return await claim(*args)  # type: ignore[arg-type]

            s.store.blobs.read = stopped_before_the_attempt  # type: ignore[method-assign]
            s.store.claim_queue = stopped_claiming  # type: ignore[method-assign]
            done = processed(s.runner)
            await s.queue(*recipients)
            async with running(s.runner):
                await paused.wait()  # claimed, then stopped
                s.clock.advance(s.runner.settings.claim_time)
                async with (
                    sibling_of(s, tmp_path, port, poll=0.05) as other,
                    running(other),
                ):
                    while await s.store.list_queue():
                        await asyncio.sleep(0.01)
                resume.set()
                await done.wait()
            assert sorted(received(mx)) == recipients
            assert [line["owner"] for line in lost_leases(caplog)] == [s.runner.owner]

    run(test)


def test_an_entry_claimed_again_by_its_runner_is_taken_up_once_the_old_attempt_ends(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        fast = ScriptedMx()
        settings = {"claim_time": CLAIM_TIME, "lease_margin": MARGIN, "poll": 0.05}
        async with (
            serving(fast, "127.0.0.1", 0) as port,
            setup(tmp_path, port, max_connections=1, **settings) as s,
        ):
            gated = GatedMx()
            async with gated.serving(port), running(s.runner):
                queue_id = await s.queue("bob@gated.test", "carol@remote.test")
                await until(lambda: gated.connected == 1)
                s.clock.advance(2 * CLAIM_TIME)  # the lease lapsed; nobody else took it
                while (await s.store.get_queue_entry(queue_id)).claimed_until <= s.clock():
                    await asyncio.sleep(0.01)  # the runner claimed it again
                assert fast.connections == 0  # not while the old attempt runs
                gated.gate.set()
                while await s.store.list_queue():
                    await asyncio.sleep(0.01)
            assert received(gated.mx) == ["bob@gated.test"]
            assert received(fast) == ["carol@remote.test"]

    run(test)
