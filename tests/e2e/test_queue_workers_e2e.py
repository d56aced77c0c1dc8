"""`poczta serve` with two workers delivering one queue: kill -9 of one in mid-drain.

Both workers run a queue runner. 600 messages, one recipient each, are queued through
the store before the server starts; sink.test's MX (published by dnsmasq) is a counting
SMTP server in this process. Once 150 have arrived the sink holds every further end of
data unanswered, and the test waits until every message the sink accepted is recorded
as delivered, so that nothing is in the one window where a crash must duplicate a
message (accepted by the peer, not yet recorded). Then the worker holding claims is
killed with SIGKILL; what it had in flight was never answered, so the sink does not
count it. The sink answers again, and the killed worker's entries are taken back by a
live runner (its sibling, or the worker the master starts in its place): every
recipient gets the message exactly once, and the queue ends empty.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poczta.config import load_config
from poczta.queue.claims import RunnerName
from poczta.store import open_store
from poczta.store.base import QueueEntry
from tests.e2e.conftest import StoreBackend
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PocztaServer, free_port, make_server
from tests.e2e.queue_sink import SINK, SinkThread, enqueue
from tests.queue.peer import ScriptedMx

pytestmark = pytest.mark.e2e

COUNT = 600
HELD_AFTER = 150
WAIT = 120.0  # a bound on each phase, far above what it takes


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    mx = ScriptedMx(gate=asyncio.Event(), gate_after=HELD_AFTER)
    with SinkThread(free_port(), mx) as running:
        yield running


def _queue(server: PocztaServer) -> list[QueueEntry]:
    async def main() -> list[QueueEntry]:
        store = await open_store(load_config(server.config))
        try:
            return await store.list_queue()
        finally:
            await store.close()

    return asyncio.run(main())


def _holders(entries: list[QueueEntry]) -> set[int]:
    """The pids of the runners holding claims on `entries`."""
    names = (RunnerName.parse(e.claimed_by) for e in entries if e.claimed_by is not None)
    return {name.pid for name in names if name is not None}


def _reaped(pid: int) -> bool:
    """Whether process `pid` is gone entirely. A zombie is not enough: its main thread
    shows "Z" while other threads may still be exiting, its sockets still open, so a
    reply the sink sent then would still count as received."""
    return not Path(f"/proc/{pid}").exists()


def _wait(condition: object, server: PocztaServer, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: {server.log_text()[-3000:]}"
        time.sleep(0.05)


def test_kill_9_of_one_worker_delivers_everything_exactly_once(
    tmp_path: Path, sink: SinkThread, store_backend: StoreBackend
) -> None:
    hosts = {"mx.sink.test": SINK}
    (tmp_path / "tx").mkdir()
    with dnsmasq_server(tmp_path, hosts=hosts, mx=[("sink.test", "mx.sink.test", 10)]) as dns:
        server = make_server(
            tmp_path / "tx",
            (
                f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns}\n'
                f"\n[outbound]\nport = {sink.port}\nloopback_is_local = false\n"
                "retry_first = 0.5\nretry_max = 1\nmax_per_domain = 10\n"
            ),
            services=("smtp",),
            top_config="workers = 2\n",
            store=store_backend.config(),
        )
        recipients = [f"user{n}@sink.test" for n in range(COUNT)]
        enqueue(server, recipients)
        server.start(own_group=True)
        try:
            _wait(lambda: sink.mx.waiting > 0, server, "nothing held at the sink")
            accepted = set(sink.received())
            assert len(accepted) == HELD_AFTER

            def settled() -> bool:
                queued = _queue(server)
                pending = {r.address for e in queued for r in e.pending()}
                return not pending & accepted and len(_holders(queued)) == 2

            _wait(settled, server, "not every accepted message recorded, or not two runners")
            victim = min(_holders(_queue(server)))
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: _reaped(victim), server, "the killed worker is not reaped")
            sink.call(sink.mx.gate.set)  # type: ignore[union-attr]

            _wait(
                lambda: len(sink.received()) >= COUNT and not _queue(server), server, "undelivered"
            )
            received = sink.received()
            assert sorted(received) == sorted(recipients)  # each exactly once
            assert sink.mx.abandoned > 0  # the killed worker had messages in flight
            taken_back = re.findall(r"queue\.claims_taken_back holders=(\S+)", server.log_text())
            assert any(f":{victim}." in holders for holders in taken_back), taken_back
            assert server.stop() == 0
        finally:
            if server.proc is not None:
                server.kill_group()
