"""`poczta serve` with two workers on the embedded store: the POP3 lock, the login throttle
and the per-IP connection limit hold whichever worker a connection lands on."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer, eventually, make_server
from tests.e2e.pop3_wire import Pop3Wire, greets, try_login, workers_logging

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
LIMITS = """
[auth]
failure_delay = 0.01
max_failure_delay = 0.05
max_failures_per_ip = 4
max_failures_per_ip_account = 3

[limits]
max_connections_per_ip = 3
"""
TRIES = 40  # connections until both workers have answered (the kernel picks one)
REFUSALS_APART = 0.11  # seconds: refusals are logged up to ten a second, then counted


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("shared-workers")
    srv = make_server(root, LIMITS, services=("pop3s",), top_config="workers = 2\n")
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def connect(srv: PocztaServer, source: str = "127.0.0.1") -> Pop3Wire:
    return Pop3Wire("127.0.0.1", srv.ports["pop3s"], source)


def lines_of(srv: PocztaServer, pattern: str, at_least: int) -> list[int]:
    """The workers of the log lines matching `pattern`, once there are `at_least`."""
    return eventually(lambda: (found := workers_logging(srv, pattern))[at_least - 1 :] and found)


def test_a_second_pop3_session_is_in_use_on_either_worker(server: PocztaServer) -> None:
    holder = connect(server)
    assert holder.login(ALICE, PASSWORDS[ALICE]).startswith("+OK")
    [locked_by] = lines_of(server, f"pop3.login .*user={ALICE}", 1)
    refused_by: set[int] = set()
    for attempt in range(1, TRIES + 1):
        other = connect(server)
        reply = other.login(ALICE, PASSWORDS[ALICE])
        other.close()
        assert reply.startswith("-ERR [IN-USE]")
        refused_by = set(lines_of(server, f"pop3.in_use .*user={ALICE}", attempt))
        if refused_by - {locked_by}:
            break
    assert refused_by - {locked_by}, "no session reached the worker without the session"
    holder.close()
    port = server.ports["pop3s"]
    eventually(lambda: try_login("127.0.0.1", port, ALICE, PASSWORDS[ALICE]).startswith("+OK"))


def _reasons(srv: PocztaServer, ip: str) -> list[tuple[str, int]]:
    found = re.findall(
        rf'auth\.failed service=pop3s ip={re.escape(ip)} .*reason=("[^"]*"|\S+) .*worker=(\d+)',
        srv.log_text(),
    )
    return [(reason.strip('"'), int(worker)) for reason, worker in found]


def test_guesses_over_many_connections_are_refused_after_the_limit(
    server: PocztaServer,
) -> None:
    attacker = "127.0.0.2"
    for attempt in range(1, TRIES + 1):
        client = connect(server, attacker)
        assert client.login(f"guess{attempt}@example.test", "wrong").startswith("-ERR")
        client.close()
        reasons = eventually(lambda n=attempt: (r := _reasons(server, attacker))[n - 1 :] and r)
        if attempt > 4 and len({w for reason, w in reasons if reason == "throttled"}) == 2:
            break
    assert [reason for reason, _ in reasons] == ["bad credentials"] * 4 + ["throttled"] * (
        len(reasons) - 4
    )
    assert len({worker for _, worker in reasons[4:]}) == 2, "one worker answered every guess"
    client = connect(server, attacker)  # the right password does not help the attacker
    assert client.login(ALICE, PASSWORDS[ALICE]).startswith("-ERR")
    client.close()
    owner = connect(server)
    assert owner.login(ALICE, PASSWORDS[ALICE]).startswith("+OK")
    owner.close()


def test_the_connection_limit_per_ip_counts_every_worker(server: PocztaServer) -> None:
    source = "127.0.0.3"
    held = [connect(server, source) for _ in range(3)]
    assert all(c.greeting.startswith("+OK") for c in held)
    for refusals in range(1, TRIES + 1):
        extra = connect(server, source)
        assert extra.greeting.startswith("-ERR [SYS/TEMP] Too many connections")
        extra.close()
        time.sleep(REFUSALS_APART)
        refused_by = set(lines_of(server, f"connection.refused .*ip={source} ", refusals))
        if len(refused_by) == 2:
            break
    assert len(refused_by) == 2, "one worker refused every connection"
    held.pop().close()
    eventually(lambda: greets("127.0.0.1", server.ports["pop3s"], source))
    for client in held:
        client.close()
