"""The committer process's protocol and service: deliveries of a store that has one.

The committer runs in a thread of the test process here (`serve_committer` is the whole
service; the master only forks it); the store under test talks to it over its socket.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.message import parse_message
from poczta.store import DeliveryTarget, Outbound, StoreUnavailable, UserId
from poczta.store.base import RecipientDsn
from poczta.store.sqlite.committer import (
    MAX_FRAME,
    DeliveryRequest,
    FrameReader,
    committer_address,
    serve_committer,
)
from poczta.store.sqlite.store import SqliteStore, prepare_files
from poczta.store.sqlite.writer import Writer
from tests.store.store_helpers import WHEN, make_message


@dataclass
class Committer:
    address: str
    thread: threading.Thread
    stopped: threading.Event
    jobs: list[int]  # jobs run by the committer's writer, read after it stopped

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def start_committer(db: Path, blobs_dir: Path) -> Committer:
    # A unique name: the address is per database path, and tmp paths repeat across runs.
    address = f"\0poczta-test-committer-{secrets.token_hex(8)}"
    blobs = prepare_files(db, blobs_dir, "filesystem")
    stopped, ready = threading.Event(), threading.Event()
    jobs: list[int] = []
    writers: list[Writer] = []

    def factory(dispatch: object) -> Writer:
        writer = Writer(db, blobs, dispatch=dispatch)  # type: ignore[arg-type]
        writers.append(writer)
        return writer

    def run() -> None:
        try:
            serve_committer(factory, blobs, address, stopped.is_set, ready=ready.set)
        finally:
            jobs.append(writers[0].jobs if writers else 0)
            blobs.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    return Committer(address, thread, stopped, jobs)


@pytest.fixture
def committer(tmp_path: Path) -> Iterator[Committer]:
    service = start_committer(tmp_path / "mail.db", tmp_path / "blobs")
    yield service
    if service.thread.is_alive():
        service.stop()


async def open_store(tmp_path: Path, address: str | None) -> tuple[SqliteStore, UserId]:
    store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs", committer=address)
    if not await store.domain_exists("example.com"):
        await store.add_domain("example.com")
    user = await store.get_user("bob@example.com")
    return store, user.id if user else await store.add_user("bob@example.com", "h", "s")


async def deliver(store: SqliteStore, user: UserId, n: int, outbound: Outbound | None = None):
    data = make_message(n)
    return await store.accept(data, parse_message(data), WHEN, [DeliveryTarget(user)], outbound)


def test_deliveries_go_through_the_committer(tmp_path: Path, committer: Committer) -> None:
    async def main() -> None:
        store, user = await open_store(tmp_path, committer.address)
        try:
            local_jobs = store.stats[1]
            results = await asyncio.gather(*(deliver(store, user, n) for n in range(40)))
            dsn = {"x@remote.test": RecipientDsn(("FAILURE",), "rfc822;x@alias.test")}
            outbound = Outbound("bob@example.com", ("x@remote.test",), "env", "FULL", dsn)
            queued = await deliver(store, user, 99, outbound)
            assert store.stats[1] == local_jobs  # none ran on the store's own writer
            inbox = await store.get_mailbox(user, "INBOX")
            metas = await store.fetch_meta(inbox.id)
            assert sorted(r.delivered[0].uid for r in results) == list(range(1, 41))
            assert [m.uid for m in metas] == list(range(1, 42))
            assert {m.subject for m in metas} == {f"Hello {n}" for n in [*range(40), 99]}
            # the quota usage is counted in the committer's transactions too
            usage = (await store.quota_states([user]))[user].usage
            assert (usage.storage, usage.messages) == (sum(m.size for m in metas), 41)
            assert await store.read_message(inbox.id, 7) == make_message(
                next(n for n, r in enumerate(results) if r.delivered[0].uid == 7)
            )
            assert queued.queue_id is not None
            [entry] = await store.list_queue()
            assert (entry.id, entry.envid, entry.ret) == (queued.queue_id, "env", "FULL")
            assert entry.recipients[0].notify == ("FAILURE",)
            assert entry.recipients[0].orcpt == "rfc822;x@alias.test"
            # The temp files were placed by the committer: nothing is left behind.
            temp = tmp_path / "blobs" / "tmp"
            assert not [p for p in temp.rglob("*") if p.is_file() and p.suffix != ".lock"]
        finally:
            await store.close()

    asyncio.run(main())
    committer.stop()
    assert committer.jobs == [41]


def test_a_body_stored_before_is_sent_along(tmp_path: Path, committer: Committer) -> None:
    async def main() -> None:
        store, user = await open_store(tmp_path, committer.address)
        try:
            first = await deliver(store, user, 1)
            second = await deliver(store, user, 1)  # same bytes: stored once, two rows
            assert [first.delivered[0].uid, second.delivered[0].uid] == [1, 2]
            inbox = await store.get_mailbox(user, "INBOX")
            assert await store.read_message(inbox.id, 2) == make_message(1)
        finally:
            await store.close()

    asyncio.run(main())


def test_without_a_committer_the_store_delivers_itself(tmp_path: Path) -> None:
    async def main() -> None:
        store, user = await open_store(tmp_path, committer_address(tmp_path / "mail.db"))
        try:
            before = store.stats[1]
            result = await deliver(store, user, 1)
            assert result.delivered[0].uid == 1
            assert store.stats[1] == before + 1  # the store's own writer ran it
        finally:
            await store.close()

    asyncio.run(main())


def test_a_committer_gone_fails_nothing_silently_then_the_store_takes_over(
    tmp_path: Path, committer: Committer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("poczta.store.sqlite.committer.CommitterLink.RETRY_SECONDS", 0.0)

    async def main() -> None:
        store, user = await open_store(tmp_path, committer.address)
        try:
            await deliver(store, user, 1)
            await asyncio.to_thread(committer.stop)
            await asyncio.sleep(0.05)  # the connection's end reaches the client
            result = await deliver(store, user, 2)  # no committer: the store's own writer
            assert result.delivered[0].uid == 2
            inbox = await store.get_mailbox(user, "INBOX")
            assert [m.uid for m in await store.fetch_meta(inbox.id)] == [1, 2]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_request_in_flight_when_the_connection_breaks_gets_store_unavailable(
    tmp_path: Path,
) -> None:
    """A fake committer that reads the request and hangs up without answering."""
    address = f"\0poczta-test-committer-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()

    async def main() -> None:
        store, user = await open_store(tmp_path, address)
        try:
            with pytest.raises(StoreUnavailable, match="committer"):
                await deliver(store, user, 1)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        thread.join(5)
        listener.close()


def test_other_users_are_refused(committer: Committer) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(committer.address)
                try:
                    sock.sendall(b"\0\0\0\2\0\0\0\0[]")
                    code = 0 if sock.recv(100) == b"" else 2  # closed without a word
                except (ConnectionResetError, BrokenPipeError):
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


requests = st.builds(
    DeliveryRequest,
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
    size=st.integers(0, 2**40),
    temp=st.one_of(st.none(), st.text(min_size=1)),
    columns=st.tuples(
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.one_of(st.none(), st.text()),
        st.text(),
        st.one_of(st.none(), st.text()),
        st.text(),
        st.text(),
    ),
    internal_date=st.text(),
    targets=st.lists(
        st.builds(
            DeliveryTarget,
            user_id=st.integers(1, 2**31).map(UserId),
            mailbox=st.text(min_size=1),
            flags=st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "$Junk"])),
        ),
        max_size=3,
    ).map(tuple),
    outbound=st.one_of(
        st.none(),
        st.builds(Outbound, st.text(), st.lists(st.text(), max_size=3).map(tuple)),
    ),
    data=st.binary(max_size=64),
)


@given(requests, st.integers(0, 2**53), st.integers(1, 50))
def test_requests_survive_the_wire_in_any_chunking(
    request: DeliveryRequest, request_id: int, chunk: int
) -> None:
    if request.temp is not None:
        request = DeliveryRequest(**{**request.__dict__, "data": b""})
    wire = request.encode(request_id) * 2
    frames = FrameReader()
    got = []
    for at in range(0, len(wire), chunk):
        got.extend(frames.feed(wire[at : at + chunk]))
    assert [DeliveryRequest.decode(h, d) for h, d in got] == [(request_id, request)] * 2


def test_garbage_and_oversized_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="frame of"):
        FrameReader().feed((MAX_FRAME).to_bytes(4, "big") + (1).to_bytes(4, "big"))
    with pytest.raises(ValueError):
        FrameReader().feed(b"\0\0\0\3\0\0\0\0{}x")
    with pytest.raises(ValueError, match="not an array"):
        FrameReader().feed(b"\0\0\0\2\0\0\0\0{}")


def test_a_garbled_request_ends_that_connection_only(tmp_path: Path, committer: Committer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(committer.address)
        sock.sendall(b"\0\0\0\5\0\0\0\0[1,2]")  # an array, but no delivery request
        assert sock.recv(100) == b""

    async def main() -> None:
        store, user = await open_store(tmp_path, committer.address)
        try:
            assert (await deliver(store, user, 1)).delivered[0].uid == 1
        finally:
            await store.close()

    asyncio.run(main())
    committer.stop()
    assert committer.jobs == [1]
