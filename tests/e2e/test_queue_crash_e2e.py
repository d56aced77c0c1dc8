"""kill -9 of `poczta serve` in the middle of delivering 1,000 queued messages.

The messages are queued through the store before the server starts, one recipient
each, to sink.test, whose MX (published by dnsmasq) is a counting SMTP server in this
process. The server is killed once a few hundred have arrived. Then, with the server
down, everything the queue no longer holds as pending must have reached the sink (a
recipient is marked delivered only after the sink's 250 was durably recorded); after a
restart every recipient gets the message at least once and the queue ends empty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PocztaServer, free_port, make_server
from tests.e2e.queue_sink import SINK, SinkThread, enqueue

pytestmark = pytest.mark.e2e

COUNT = 1000
WAIT = 120.0  # a bound on each phase, far above what it takes


def _enqueue(server: PocztaServer) -> list[str]:
    recipients = [f"user{n}@sink.test" for n in range(COUNT)]
    enqueue(server, recipients)
    return recipients


def _pending(server: PocztaServer) -> set[str]:
    entries = json.loads(server.cli("queue", "list", "--json").stdout)
    return {address for entry in entries for address in entry["pending"]}


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread(free_port()) as running:
        yield running


def test_kill_9_mid_delivery_loses_nothing(tmp_path: Path, sink: SinkThread) -> None:
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
        )
        recipients = _enqueue(server)
        server.start()
        deadline = time.monotonic() + WAIT
        while len(sink.received()) < COUNT // 4:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.01)
        server.kill()
        received_before = set(sink.received())
        assert len(received_before) < COUNT, "delivered everything before the kill"

        # the server is down: whatever the queue no longer has pending reached the sink
        pending = _pending(server)
        assert set(recipients) - pending <= received_before

        server.start()
        deadline = time.monotonic() + WAIT
        while set(sink.received()) != set(recipients) or _pending(server):
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.1)
        server.stop()
        received = sink.received()
        duplicates = len(received) - len(set(received))
        # at-least-once: only what was in flight at the kill can arrive twice
        assert duplicates <= 10, duplicates  # max_per_domain connections, one message each
        assert json.loads(server.cli("queue", "list", "--json").stdout) == []
