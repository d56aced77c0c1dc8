"""The queue runner over loopback: real sockets and a real store, an in-memory zone and a
test clock (no test sleeps for a retry).

Scripted peers (`tests.queue.peer`) answer 250, 451 or 550; what they received, what the
queue holds afterwards and the DSNs in the sender's INBOX are what the tests look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from poczta.delivery import Delivery, DeliveryPlan
from poczta.dns import Resolver, ZoneResolver
from poczta.queue.connection import ConnectionCache, Timeouts, opportunistic_tls
from poczta.queue.deliver import Deliverer, DeliverySettings
from poczta.queue.mta_sts_cache import MtaStsPolicies
from poczta.queue.reports import Reporter
from poczta.queue.runner import QueueRunner, RunnerSettings, retry_delay
from poczta.smtp.events import Accept, Reject
from poczta.store.base import (
    DELIVERED,
    FAILED,
    PENDING,
    QueueEntry,
    QueueId,
    RecipientDsn,
    UserId,
)
from poczta.store.sqlite.store import SqliteStore
from tests.e2e.harness import free_port
from tests.queue.peer import ScriptedMx, serving

SENDER = "alice@example.test"
MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.test>\r\n\r\nHello Bob.\r\n"
)
ZONE: Mapping[str, Mapping[str, Iterable[object]]] = {
    "remote.test": {"MX": [(10, "mx.remote.test")]},
    "mx.remote.test": {"A": ["127.0.0.1"]},
    "fallback.test": {"MX": [(10, "dead.fallback.test"), (20, "mx.remote.test")]},
    "dead.fallback.test": {"A": ["127.0.0.9"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "gated.test": {"MX": [(10, "mx.gated.test")]},
    "mx.gated.test": {"A": ["127.0.0.2"]},
}


class MovingClock:
    """The real time plus what the test skipped ahead (entries are stamped in real time)."""

    def __init__(self) -> None:
        self.skipped = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skipped

    @property
    def now(self) -> datetime:
        return self()

    def advance(self, seconds: float) -> None:
        self.skipped += timedelta(seconds=seconds)


@dataclass
class Setup:
    store: SqliteStore
    delivery: Delivery
    runner: QueueRunner
    clock: MovingClock
    alice: UserId

    async def queue(self, *recipients: str, notify: tuple[str, ...] | None = None) -> QueueId:
        dsn = {r: RecipientDsn(notify, f"rfc822;{r}") for r in recipients} if notify else {}
        plan = DeliveryPlan(remote=list(recipients), envid="ENV-1", remote_dsn=dsn)
        await self.delivery.deliver(MESSAGE, plan, SENDER)
        return (await self.store.list_queue())[-1].id

    async def inbox(self, user: UserId) -> list[EmailMessage]:
        box = await self.store.get_mailbox(user, "INBOX")
        found = []
        for meta in await self.store.fetch_meta(box.id):
            raw = await self.store.read_message(box.id, meta.uid)
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found


PolicyFactory = Callable[[SqliteStore, MovingClock], MtaStsPolicies]


def make_runner(
    store: SqliteStore,
    delivery: Delivery,
    port: int,
    clock: MovingClock,
    *,
    resolver: Resolver | None = None,
    mta_sts: PolicyFactory | None = None,
    mta_sts_tls: ssl.SSLContext | None = None,
    **settings: float,
) -> QueueRunner:
    """A runner of `store` delivering to `port` of the hosts in ZONE (or `resolver`), with
    the MTA-STS policies `mta_sts` makes of the store and the clock, if given."""
    timeouts = Timeouts(connect=2, command=5, data_init=5, data_block=5, data_end=5)
    deliver_settings = DeliverySettings(
        helo="out.example.test", port=port, timeouts=timeouts, loopback_is_local=False
    )
    deliverer = Deliverer(
        resolver or ZoneResolver.from_mapping(ZONE),
        deliver_settings,
        ConnectionCache(5.0),
        opportunistic=opportunistic_tls(),
        mta_sts=mta_sts(store, clock) if mta_sts is not None else None,
        mta_sts_tls=mta_sts_tls,
    )
    runner_settings = RunnerSettings(retry_first=60, retry_max=600, **settings)  # type: ignore[arg-type]
    reporter = Reporter(delivery, "out.example.test", runner_settings.lifetime, clock)
    return QueueRunner(store, deliverer, reporter, runner_settings, node="out", clock=clock)


@asynccontextmanager
async def setup(
    tmp_path: Path,
    port: int,
    *,
    resolver: Resolver | None = None,
    mta_sts: PolicyFactory | None = None,
    mta_sts_tls: ssl.SSLContext | None = None,
    **settings: float,
) -> AsyncIterator[Setup]:
    """A new store with alice, and its runner (`make_runner`)."""
    store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
    await store.add_domain("example.test")
    alice = await store.add_user(SENDER, "x", "x")
    delivery = Delivery(store, cache_ttl=0)
    clock = MovingClock()
    runner = make_runner(
        store,
        delivery,
        port,
        clock,
        resolver=resolver,
        mta_sts=mta_sts,
        mta_sts_tls=mta_sts_tls,
        **settings,
    )
    try:
        yield Setup(store, delivery, runner, clock, alice)
    finally:
        await runner.deliverer.cache.close()
        await store.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def dsn_fields(report: EmailMessage) -> list[dict[str, str]]:
    """The per-message block and each per-recipient block of a DSN's delivery-status."""
    [status] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    raw = status.as_bytes().split(b"\n\n", 1)[1].decode()
    blocks = []
    for block in raw.replace("\r\n", "\n").strip().split("\n\n"):
        unfolded = block.replace("\n ", " ").replace("\n\t", " ")
        # "type; value" and "type;value" are the same (RFC 3464): compare without the space
        pairs = (line.split(": ", 1) for line in unfolded.splitlines() if ": " in line)
        fields = {name: value.replace("; ", ";", 1) for name, value in pairs}
        blocks.append(fields)
    return blocks


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [retry_delay(n, 300, 14_400) for n in range(1, 9)] == [
        300,
        600,
        1200,
        2400,
        4800,
        9600,
        14_400,
        14_400,
    ]


def test_delivers_every_recipient_of_a_domain_in_one_transaction(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue("bob@remote.test", "carol@remote.test")
            assert await s.runner.run_once() == 1
            [received] = mx.messages
            assert received.sender == SENDER
            assert sorted(received.recipients) == ["bob@remote.test", "carol@remote.test"]
            assert received.data.endswith(b"Hello Bob.\r\n")
            assert await s.store.list_queue() == []  # finished: nothing left to do
            assert await s.inbox(s.alice) == []  # and no DSN nobody asked for

    run(test)


def test_a_connection_is_reused_for_the_next_message(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue("bob@remote.test")
            await s.queue("carol@remote.test")
            await s.runner.run_once()  # both at once: a connection each
            await s.queue("dave@remote.test")
            await s.runner.run_once()  # the cached one again
            assert len(mx.messages) == 3 and mx.connections == 2

    run(test)


def test_a_domain_at_its_limit_leaves_the_connections_to_other_domains(tmp_path: Path) -> None:
    async def test() -> None:
        fast, gated_mx, gate = ScriptedMx(), ScriptedMx(), asyncio.Event()

        async def gated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await gate.wait()  # holds the connection before greeting
            await gated_mx.session(reader, writer)

        async with (
            serving(fast, "127.0.0.1", 0) as port,
            setup(tmp_path, port, max_connections=2, max_per_domain=1) as s,
        ):
            server = await asyncio.start_server(gated, "127.0.0.2", port)
            async with server:
                await s.queue("one@gated.test")
                await s.queue("two@gated.test")  # waits for gated.test's only connection
                await s.queue("bob@remote.test")
                running = asyncio.ensure_future(s.runner.run_once())
                while not fast.messages:  # delivered while gated.test is still stuck
                    assert not running.done()
                    await asyncio.sleep(0.01)
                gate.set()
                assert await running == 3
            assert len(gated_mx.messages) == 2
            assert await s.store.list_queue() == []

    run(test)


def test_451_is_retried_after_the_backoff_and_delivered_once(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(data=lambda n: Reject(451, "4.3.0", "try later") if n == 0 else Accept())
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            queue_id = await s.queue("bob@remote.test")
            await s.runner.run_once()
            entry = await s.store.get_queue_entry(queue_id)
            [bob] = entry.recipients
            assert (bob.status, bob.reply_code, bob.attempts) == (PENDING, 451, 1)
            wait = (entry.next_attempt - s.clock.now).total_seconds()
            assert entry.attempts == 1 and 55 < wait <= 60
            assert await s.runner.run_once() == 0  # not due yet
            s.clock.advance(60)
            assert await s.runner.run_once() == 1
            assert len(mx.messages) == 1 and mx.attempts == 2
            assert await s.store.list_queue() == []

    run(test)


def test_550_bounces_to_the_sender_inbox(tmp_path: Path) -> None:
    async def test() -> None:
        def rcpt(address: str) -> Accept | Reject:
            if address.startswith("nobody"):
                return Reject(550, "5.1.1", "no such user here")
            return Accept()

        mx = ScriptedMx(rcpt=rcpt)
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue("bob@remote.test", "nobody@remote.test")
            await s.runner.run_once()
            assert [m.recipients for m in mx.messages] == [["bob@remote.test"]]
            [bounce] = await s.inbox(s.alice)
            assert bounce["To"] == SENDER and bounce["Auto-Submitted"] == "auto-replied"
            assert bounce.get_content_type() == "multipart/report"
            envelope, recipient = dsn_fields(bounce)
            assert envelope["Reporting-MTA"] == "dns;out.example.test"
            assert envelope["Original-Envelope-Id"] == "ENV-1"
            assert recipient["Final-Recipient"] == "rfc822;nobody@remote.test"
            assert (recipient["Action"], recipient["Status"]) == ("failed", "5.1.1")
            assert recipient["Remote-MTA"] == "dns;mx.remote.test"
            assert "550 5.1.1 no such user here" in recipient["Diagnostic-Code"]
            assert bounce["Return-Path"] == "<>"
            assert await s.store.list_queue() == []

    run(test)


def test_an_unreachable_first_mx_falls_back_to_the_next(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx()
        port = free_port()
        async with serving(mx, "127.0.0.1", port), setup(tmp_path, port) as s:
            await s.queue("bob@fallback.test")
            await s.runner.run_once()
            assert [m.recipients for m in mx.messages] == [["bob@fallback.test"]]
            assert await s.store.list_queue() == []

    run(test)


def test_a_null_mx_bounces_at_once(tmp_path: Path) -> None:
    async def test() -> None:
        async with setup(tmp_path, free_port()) as s:
            await s.queue("bob@nullmx.test")
            await s.runner.run_once()
            [bounce] = await s.inbox(s.alice)
            [_, recipient] = dsn_fields(bounce)
            assert (recipient["Action"], recipient["Status"]) == ("failed", "5.1.10")
            assert await s.store.list_queue() == []

    run(test)


def test_expiry_bounces_and_the_delay_warning_comes_once(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(rcpt=lambda _a: Reject(451, "4.2.0", "mailbox busy"))
        async with (
            serving(mx, "127.0.0.1", 0) as port,
            setup(tmp_path, port, lifetime=3600, delay_warning=100) as s,
        ):
            queue_id = await s.queue("bob@remote.test")
            await s.runner.run_once()
            assert await s.inbox(s.alice) == []
            s.clock.advance(120)
            await s.runner.run_once()
            [warning] = await s.inbox(s.alice)
            assert dsn_fields(warning)[1]["Action"] == "delayed"
            s.clock.advance(600)
            await s.runner.run_once()
            assert len(await s.inbox(s.alice)) == 1  # warned once only
            s.clock.advance(3600)
            await s.runner.run_once()
            warning, bounce = await s.inbox(s.alice)
            [_, recipient] = dsn_fields(bounce)
            assert (recipient["Action"], recipient["Status"]) == ("failed", "4.2.0")
            assert "delivery time expired" in recipient["Diagnostic-Code"]
            with pytest.raises(Exception, match="no queue entry"):
                await s.store.get_queue_entry(queue_id)

    run(test)


def test_notify_success_and_never(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(rcpt=lambda a: Reject(550, "5.1.1", "gone") if "x" in a else Accept())
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue("bob@remote.test", notify=("SUCCESS",))
            await s.queue("xavier@remote.test", notify=("NEVER",))
            await s.runner.run_once()
            [report] = await s.inbox(s.alice)
            [_, recipient] = dsn_fields(report)
            assert recipient["Action"] == "relayed"
            assert recipient["Original-Recipient"] == "rfc822;bob@remote.test"
            assert await s.store.list_queue() == []

    run(test)


def test_a_bounce_is_never_bounced(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(rcpt=lambda _a: Reject(550, "5.1.1", "gone"))
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.delivery.deliver(MESSAGE, DeliveryPlan(remote=["bob@remote.test"]), "")
            await s.runner.run_once()
            assert await s.store.list_queue() == []  # failed, and no report to anyone
            assert await s.inbox(s.alice) == []

    run(test)


def test_results_are_recorded_before_a_crash_loses_them(tmp_path: Path) -> None:
    """A delivered recipient is recorded as soon as the peer's 250 arrives, whatever
    happens to the rest of the attempt."""

    async def test() -> None:
        mx = ScriptedMx()
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            queue_id = await s.queue("bob@remote.test", "carol@nullmx.test")

            async def crash(entry: QueueEntry, original: bytes) -> None:
                raise RuntimeError("the runner died here")

            s.runner.reporter.final_reports = crash  # type: ignore[method-assign]
            with pytest.raises(RuntimeError):
                await s.runner.run_once()
            statuses = {
                r.address: r.status for r in (await s.store.get_queue_entry(queue_id)).recipients
            }
            assert statuses == {"bob@remote.test": DELIVERED, "carol@nullmx.test": FAILED}

    run(test)


def test_the_running_loop_delivers_what_is_queued_and_flushed(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(data=lambda n: Reject(451, "4.3.0", "later") if n == 0 else Accept())
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port, poll=0.05) as s:
            running = asyncio.ensure_future(s.runner.run())
            try:
                queue_id = await s.queue("bob@remote.test")
                while mx.attempts < 1:  # the first try, refused with 451
                    await asyncio.sleep(0.01)
                while (await s.store.get_queue_entry(queue_id)).claimed_by is not None:
                    await asyncio.sleep(0.01)  # rescheduled a minute ahead
                await s.store.flush_queue(s.clock())  # as `poczta queue flush` does
                while await s.store.list_queue():
                    await asyncio.sleep(0.01)
                assert len(mx.messages) == 1 and mx.attempts == 2
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    run(test)


def test_a_silent_server_times_out_and_the_recipient_is_retried(tmp_path: Path) -> None:
    async def test() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never greets

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, setup(tmp_path, port) as s:
            s.runner.deliverer.settings = replace(
                s.runner.deliverer.settings, timeouts=Timeouts(connect=1, command=0.3)
            )
            queue_id = await s.queue("bob@remote.test")
            await s.runner.run_once()
            [bob] = (await s.store.get_queue_entry(queue_id)).recipients
            assert bob.status == PENDING and bob.attempts == 1
            assert "timed out (greeting)" in (bob.last_error or "")

    run(test)


def test_a_server_that_stops_reading_the_data_times_out(tmp_path: Path) -> None:
    async def test() -> None:
        async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 stalls.test\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"DATA"):
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    await asyncio.Event().wait()  # reads no more of the message
                writer.write(b"250 ok\r\n")

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(stalls, sock=listener)
        port = listener.getsockname()[1]
        async with server, setup(tmp_path, port) as s:
            s.runner.deliverer.settings = replace(
                s.runner.deliverer.settings, timeouts=Timeouts(connect=1, data_block=0.3)
            )
            body = b"x" * 998 + b"\r\n"
            big = MESSAGE + body * 8_000  # far more than the socket buffers hold
            plan = DeliveryPlan(remote=["bob@remote.test"])
            await s.delivery.deliver(big, plan, SENDER)
            queue_id = (await s.store.list_queue())[-1].id
            await s.runner.run_once()
            [bob] = (await s.store.get_queue_entry(queue_id)).recipients
            assert bob.status == PENDING and bob.attempts == 1
            assert "timed out" in (bob.last_error or "")

    run(test)
