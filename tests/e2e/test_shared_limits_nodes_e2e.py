"""Two `poczta serve` nodes on one PostgreSQL database, on 127.0.0.2 and 127.0.0.3: the
POP3 lock, the login throttle and the per-IP connection limit hold across them, and a
node killed with SIGKILL locks nobody out for longer than its lease."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import (
    PASSWORDS,
    POCZTA,
    PocztaServer,
    eventually,
    make_server,
    postgres_store_config,
    remove_sqlite_files,
    start_servers,
    stop_servers,
)
from tests.e2e.pop3_wire import Pop3Wire, greets, try_login
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"
LEASE = 3  # seconds, renewed every second
LIMITS = f"""
[auth]
failure_delay = 0.01
max_failure_delay = 0.05
max_failures_per_ip = 6
max_failures_per_ip_account = 3

[limits]
max_connections_per_ip = 3
shared_lease = {LEASE}
"""


@dataclass
class Cluster:
    """The database the nodes share (its `[store]` table) and the two running nodes."""

    store: str
    a: PocztaServer
    b: PocztaServer


def node(root: Path, store: str, host: str, *, first: bool = False) -> PocztaServer:
    """A node on `host` using the database of `store`; the `first` one adds the test
    users to it, the others copy a data directory set up once and keep out of it."""
    root.mkdir(parents=True, exist_ok=True)
    extra = LIMITS + store if first else LIMITS
    server = make_server(root, extra, ("pop3s",), top_config="workers = 1\n", host=host)
    if not first:
        server.extra_config += store
        server.write_config()
    remove_sqlite_files(server.root / "data")
    return server


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("shared-nodes")
    store = postgres_store_config(postgres.dsn(postgres.new_database()), postgres.password_file)
    a = node(root / "a", store, "127.0.0.2", first=True)
    b = node(root / "b", store, "127.0.0.3")
    start_servers(a, b)
    yield Cluster(store, a, b)
    stop_servers(a, b)


def login_reply(srv: PocztaServer, user: str, source: str = "127.0.0.1") -> str:
    return try_login(srv.host, srv.ports["pop3s"], user, PASSWORDS[user], source)


def connect(srv: PocztaServer, source: str) -> Pop3Wire:
    return Pop3Wire(srv.host, srv.ports["pop3s"], source)


def test_a_maildrop_open_on_one_node_is_in_use_on_the_other(cluster: Cluster) -> None:
    holder = connect(cluster.a, "127.0.0.1")
    assert holder.login(ALICE, PASSWORDS[ALICE]).startswith("+OK")
    assert login_reply(cluster.b, ALICE).startswith("-ERR [IN-USE]")
    assert login_reply(cluster.a, ALICE).startswith("-ERR [IN-USE]")
    holder.close()
    eventually(lambda: login_reply(cluster.b, ALICE).startswith("+OK"))


def _reasons(srv: PocztaServer, ip: str) -> list[str]:
    found = re.findall(rf'auth\.failed .*ip={re.escape(ip)} .*reason=("[^"]*"|\S+)', srv.log_text())
    return [reason.strip('"') for reason in found]


def test_guesses_spread_over_both_nodes_are_throttled_as_on_one(cluster: Cluster) -> None:
    attacker = "127.0.0.4"
    for attempt in range(8):
        srv = (cluster.a, cluster.b)[attempt % 2]
        client = connect(srv, attacker)
        assert client.login(ALICE, f"guess-{attempt}").startswith("-ERR")
        client.close()
    both = eventually(
        lambda: len(r := _reasons(cluster.a, attacker) + _reasons(cluster.b, attacker)) == 8 and r
    )
    # one node alone would have let each try its own three guesses
    assert sorted(both) == ["bad credentials"] * 3 + ["throttled"] * 5
    assert login_reply(cluster.b, ALICE, attacker).startswith("-ERR")  # even the password
    assert login_reply(cluster.a, ALICE).startswith("+OK")  # the owner, from elsewhere
    assert login_reply(cluster.b, ALICE).startswith("+OK")


def test_the_connection_limit_per_ip_counts_both_nodes(cluster: Cluster) -> None:
    source = "127.0.0.5"
    held = [connect(cluster.a, source), connect(cluster.a, source), connect(cluster.b, source)]
    assert all(client.greeting.startswith("+OK") for client in held)
    for srv in (cluster.a, cluster.b):
        extra = connect(srv, source)
        assert extra.greeting.startswith("-ERR [SYS/TEMP] Too many connections")
        extra.close()
    held.pop(0).close()
    eventually(lambda: greets(cluster.b.host, cluster.b.ports["pop3s"], source))
    for client in held:
        client.close()


def _kill_while_holding(cluster: Cluster, root: Path, launch: list[str]) -> PocztaServer:
    """A third node started by `launch` + serve, holding bob's maildrop, then killed
    with SIGKILL (with all of its processes); bob is in use on node B before the kill."""
    doomed = node(root, cluster.store, "127.0.0.2")
    doomed.proc = subprocess.Popen(
        [*launch, *POCZTA, "serve", "-c", str(doomed.config)],
        stdout=doomed.log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        doomed.wait_until_listening()
        client = connect(doomed, "127.0.0.1")
        assert client.login(BOB, PASSWORDS[BOB]).startswith("+OK")
        assert login_reply(cluster.b, BOB).startswith("-ERR [IN-USE]")
    finally:
        doomed.kill_group()
    client.sock.close()
    return doomed


def test_a_killed_node_of_this_machine_loses_its_locks_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    _kill_while_holding(cluster, tmp_path, [])
    assert login_reply(cluster.b, BOB).startswith("+OK")
    # taken from the holder seen to be gone (or freed by a renewal, of either node, that
    # saw it first)
    seen_gone = rf"pop3\.lock_taken_over user={BOB}|leases\.dropped holders="
    eventually(lambda: re.search(seen_gone, cluster.a.log_text() + cluster.b.log_text()))


def test_a_killed_node_of_another_machine_holds_its_locks_until_its_lease_ends(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A node in a pid namespace of its own cannot be seen to be gone (as on another
    machine): its lock is free once its lease has run out."""
    launch = ["unshare", "--pid", "--fork", "--mount-proc"]
    if shutil.which("unshare") is None or subprocess.run([*launch, "true"]).returncode != 0:
        pytest.skip("cannot make a pid namespace here")
    # Only a take-over says a holder was seen to be gone: a `leases.dropped` may still come
    # for the node another test killed, or for this one once its lease is long over.
    seen_gone = re.compile(rf"pop3\.lock_taken_over user={re.escape(BOB)}")

    def taken_over() -> int:
        return len(seen_gone.findall(cluster.a.log_text() + cluster.b.log_text()))

    before = taken_over()
    _kill_while_holding(cluster, tmp_path, launch)
    eventually(lambda: login_reply(cluster.b, BOB).startswith("+OK"), timeout=5 * LEASE)
    assert taken_over() == before  # its lease ended
