"""Three poczta nodes on one PostgreSQL database behave as one server.

The nodes (`tests.e2e.nodes`) listen on 127.0.0.2, .3 and .4, one worker each, and
deliver their queue to sink.test, whose MX (published by dnsmasq) is a counting SMTP
server in this process on 127.0.0.5. Each node runs in a PID namespace of its own where
the machine allows it, so that none can look at another's processes, as on three
machines. Each test makes its own users (through the command line of one node), so
none reads another's mail.

The bounds on waits are for a hung test, never a measurement; the latencies the issue
names (an IDLE woken within 1 s, an admin change seen within 5 s) are printed. The 5 s
of an admin change is the one bound that is the contract itself: the recipient cache of
a node keeps an answer 2 s (`poczta.delivery.RECIPIENT_TTL`), well inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import imaplib
import os
import re
import signal
import smtplib
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from poczta.queue.claims import RunnerName
from poczta.store.base import QueueEntry
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import free_port
from tests.e2e.nodes import (
    Node,
    SmtpLoad,
    enqueue_on,
    flags_by_uid,
    idle_session,
    imap_login,
    inbox,
    make_nodes,
    queue_entries,
    read_until,
    send_messages,
    start_nodes,
    stop_nodes,
    stuck_transactions,
    wait_for,
)
from tests.e2e.queue_sink import SinkThread
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.e2e

SINK_HOST = "127.0.0.5"  # not a node's address: an MX there would be the node itself
CLAIM_TIME = 5.0  # seconds: the lease of a node's claims, taken over after it died
WORKERS = 1  # per node: three queue runners in all
MAX_PER_DOMAIN = 10  # connections to sink.test per node
WAIT = 60.0  # a bound on each phase, far above what it takes
PASSWORD = "node-test-secret-7"


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkThread]:
    with SinkThread(free_port(), host=SINK_HOST) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, sink: SinkThread
) -> Iterator[list[Node]]:
    root = tmp_path_factory.mktemp("nodes")
    hosts = {"mx.sink.test": SINK_HOST}
    with dnsmasq_server(root, hosts=hosts, mx=[("sink.test", "mx.sink.test", 10)]) as dns:
        outbound = (
            f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns}\n'
            f"\n[outbound]\nport = {sink.port}\nloopback_is_local = false\n"
            f"retry_first = 0.5\nretry_max = 1\nclaim_time = {CLAIM_TIME}\n"
            f"max_per_domain = {MAX_PER_DOMAIN}\n"
            "\n[auth]\nfailure_delay = 0.1\n"  # the throttle as ever, its waits shorter
        )
        nodes = make_nodes(
            root,
            postgres,
            services=("smtp", "imaps"),
            extra_config=outbound,
            top_config=f"workers = {WORKERS}\n",
        )
        start_nodes(nodes)
        try:
            yield nodes
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    node.proc = None  # died in a test: nothing to stop
            stop_nodes(nodes)


@pytest.fixture
def nodes(cluster: list[Node]) -> list[Node]:
    """The three nodes, each running (one a test killed is started again)."""
    start_nodes(cluster)
    return cluster


def add_user(node: Node, local: str) -> str:
    address = f"{local}@example.test"
    node.cli("user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    return address


def node_logs(nodes: list[Node]) -> str:
    return "\n".join(f"--- {n.name}\n{n.log_text()[-1500:]}" for n in nodes)


# --- 1. mail accepted on each node lands once, with one numbering ---------------


def test_mail_accepted_on_every_node_lands_once_with_the_same_uids(nodes: list[Node]) -> None:
    user = add_user(nodes[0], "many")
    per_node, clients_per_node = 100, 3
    batches = [
        (node, [f"n{n}.c{c}.m{m}@remote.test" for m in range(c, per_node, clients_per_node)])
        for n, node in enumerate(nodes)
        for c in range(clients_per_node)
    ]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        acked = [
            message_id
            for done in pool.map(lambda b: send_messages(b[0], user, b[1]), batches)
            for message_id in done
        ]
    assert len(acked) == 3 * per_node

    took = time.monotonic() - started
    print(f"\n{len(acked)} messages to three nodes over {len(batches)} connections: {took:.1f} s")
    views = [inbox(node, user, PASSWORD) for node in nodes]
    first = views[0]
    assert sorted(first.message_ids) == list(range(1, len(acked) + 1))  # no gap, no repeat
    assert sorted(first.message_ids.values()) == sorted(acked)  # each message once
    assert first.uidnext == len(acked) + 1
    for view in views[1:]:
        assert view == first  # UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and every UID agree
    assert first.highestmodseq >= len(acked)  # one MODSEQ taken per delivery


def test_uids_and_uidvalidity_are_never_given_twice_across_nodes(nodes: list[Node]) -> None:
    user = add_user(nodes[0], "keeper")
    send_messages(nodes[0], user, [f"keep.{n}@remote.test" for n in range(3)])
    sessions = [imap_login(node, user, PASSWORD) for node in nodes]
    a, b, c = sessions
    try:
        b.select("INBOX")
        b.uid("STORE", "3", "+FLAGS", r"(\Deleted)")
        assert b.expunge()[1] == [b"3"]
        send_messages(nodes[2], user, ["keep.after@remote.test"])
        a.select("INBOX")
        assert a.uid("SEARCH", "ALL")[1] == [b"1 2 4"]  # the expunged UID is not given again

        def create(pair: tuple[imaplib.IMAP4_SSL, str]) -> str:
            return pair[0].create(pair[1])[0]

        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # on the three nodes at once
            made = list(pool.map(create, [(s, f"Box{n}") for n, s in enumerate(sessions)]))
            same = sorted(pool.map(create, [(s, "Same") for s in sessions]))
        assert made == ["OK"] * 3 and same == ["NO", "NO", "OK"]
        names = [f"Box{n}" for n in range(3)] + ["Same"]
        validities = [_uidvalidity(c, name) for name in names]
        assert len(set(validities)) == len(names)
        assert a.delete("Same")[0] == "OK" and b.create("Same")[0] == "OK"
        assert _uidvalidity(c, "Same") > max(validities)  # made again: a new UIDVALIDITY

        def rename(pair: tuple[imaplib.IMAP4_SSL, str]) -> str:
            return pair[0].rename(pair[1], "Renamed")[0]

        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one new name, three renames
            renamed = sorted(pool.map(rename, [(s, f"Box{n}") for n, s in enumerate(sessions)]))
        assert renamed == ["NO", "NO", "OK"]
        assert all(session.noop()[0] == "OK" for session in sessions)
    finally:
        for session in sessions:
            session.logout()


def _uidvalidity(session: imaplib.IMAP4_SSL, mailbox: str) -> int:
    _, data = session.status(mailbox, "(UIDVALIDITY)")
    found = re.search(rb"UIDVALIDITY (\d+)", data[0])
    assert found is not None, data
    return int(found.group(1))


# --- 2. IDLE on one node wakes for a delivery on another; flags cross over -------


def test_idle_on_one_node_wakes_for_a_delivery_on_another(nodes: list[Node]) -> None:
    """A session idles on each node; a message delivered on each node in turn wakes all
    three (the latency printed is, for the second session read, an upper bound)."""
    user = add_user(nodes[1], "idler")
    idling = [idle_session(node, user, PASSWORD) for node in nodes]
    latencies = []
    try:
        for n, source in enumerate(nodes):
            started = time.monotonic()
            send_messages(source, user, [f"idle.{n}@remote.test"])
            for watcher, (sock, exists) in zip(nodes, idling, strict=True):
                read_until(sock, f"\\* {exists + n + 1} EXISTS".encode())
                if watcher is not source:
                    latencies.append(time.monotonic() - started)
        for sock, _ in idling:
            sock.sendall(b"DONE\r\nd LOGOUT\r\n")
            assert b"c OK" in read_until(sock, rb"d OK")
    finally:
        for sock, _ in idling:
            sock.close()
    print(
        f"\nIDLE woken on another node, from the start of the SMTP delivery: median"
        f" {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )


def test_a_flag_set_on_one_node_shows_on_another_at_its_next_command(nodes: list[Node]) -> None:
    user = add_user(nodes[2], "flagger")
    send_messages(nodes[0], user, ["flag.1@remote.test", "flag.2@remote.test"])
    reader, writer = imap_login(nodes[0], user, PASSWORD), imap_login(nodes[1], user, PASSWORD)
    try:
        assert reader.select("INBOX")[1] == [b"2"]
        writer.select("INBOX")
        assert writer.uid("STORE", "2", "+FLAGS", r"(\Flagged $Work)")[0] == "OK"
        reader.noop()
        told = reader.untagged_responses.pop("FETCH", [])
        assert [f for f in told if isinstance(f, bytes) and f.startswith(b"2 (")], told
        assert "\\Flagged" in flags_by_uid(told, with_uid=False)[2]  # NOOP tells of it
        _, data = reader.uid("FETCH", "1:2", "(FLAGS)")
        flags = flags_by_uid(data)
        assert {"\\Flagged", "$Work"} <= flags[2] and "\\Flagged" not in flags[1]
    finally:
        reader.logout()
        writer.logout()


# --- 3. admin commands on one node take effect on every node -----------------------


def _logs_in(node: Node, user: str, password: str) -> bool:
    try:
        imap_login(node, user, password).logout()
    except imaplib.IMAP4.error:
        return False
    return True


def _rcpt_accepted(node: Node, address: str) -> bool:
    """Whether `node` takes mail for `address` (250), or refuses it as unknown (550)."""
    with smtplib.SMTP(node.host, node.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("carol@remote.test")[0] == 250
        code, text = smtp.rcpt(address)
    assert code in (250, 550), (code, text)
    return code == 250


def test_user_commands_on_one_node_take_effect_on_every_node(nodes: list[Node]) -> None:
    """Each change is made through one node's command line and looked for on the others,
    whose recipient caches hold the answer from before it; each is seen within 5 s of
    the command's end (the time printed)."""
    a, b, c = nodes
    address, alias = "newcomer@example.test", "greeter@example.test"
    done: dict[str, float] = {}  # when each command returned
    seen: dict[str, float] = {}

    def run(change: str, node: Node, *args: str, stdin: str | None = None) -> None:
        node.cli(*args, stdin=stdin)
        done[change] = time.monotonic()

    def check(what: str, change: str, condition: Callable[[], bool]) -> None:
        seen[what] = _within_five_seconds(what, condition, done[change], nodes)

    assert not _rcpt_accepted(b, address) and not _rcpt_accepted(c, alias)
    run("add", a, "user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    run("alias", b, "alias", "add", alias, address)
    check("login on b", "add", lambda: _logs_in(b, address, PASSWORD))
    check("login on c", "add", lambda: _logs_in(c, address, PASSWORD))
    check("RCPT on b", "add", lambda: _rcpt_accepted(b, address))
    check("alias at RCPT on c", "alias", lambda: _rcpt_accepted(c, alias))
    send_messages(c, alias, ["welcome@remote.test"])
    assert list(inbox(b, address, PASSWORD).message_ids.values()) == ["welcome@remote.test"]

    changed = "newcomer-secret-8"
    run("passwd", b, "user", "passwd", address, "--password-stdin", stdin=changed + "\n")
    check("new password on c", "passwd", lambda: _logs_in(c, address, changed))
    assert not _logs_in(a, address, PASSWORD)  # the old one no longer works anywhere

    assert _rcpt_accepted(a, address)
    run("remove", c, "user", "remove", address, "--yes")
    check("removal at login on a", "remove", lambda: not _logs_in(a, address, changed))
    check("removal at RCPT on a", "remove", lambda: not _rcpt_accepted(a, address))
    print(
        "\nadmin changes seen on another node after: "
        + ", ".join(f"{what} {took:.2f} s" for what, took in seen.items())
    )


def _within_five_seconds(
    what: str, condition: Callable[[], bool], since: float, nodes: list[Node]
) -> float:
    """Poll `condition` until it holds, failing only when a try begun more than 5 s (the
    issue's bound) after `since` does not see the change; the time since `since`."""
    while True:
        late = time.monotonic() > since + 5.0
        if condition():
            return time.monotonic() - since
        assert not late, f"{what} not seen within 5 s: {node_logs(nodes)}"
        time.sleep(0.1)


# --- 4. the queue, drained by the runners of three nodes -------------------------

_SINK_MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]*)>", re.M | re.I)


def _arrived(sink: SinkThread, prefix: str) -> Counter[str]:
    """How many times each message whose Message-ID starts with `prefix` reached the sink."""
    found: Counter[str] = Counter()
    for received in list(sink.mx.messages):
        match = _SINK_MESSAGE_ID.search(received.data)
        if match is not None and match.group(1).decode().startswith(prefix):
            found[match.group(1).decode()] += 1
    return found


def _queued_for(nodes: list[Node], prefix: str) -> list[str]:
    return [
        r.address
        for e in queue_entries(nodes[0])
        for r in e.recipients
        if r.address.startswith(prefix)
    ]


def _sink_message(n: int, prefix: str) -> tuple[str, bytes]:
    message_id = f"{prefix}{n}@node.test"
    body = f"From: alice@example.test\r\nSubject: {n}\r\nMessage-ID: <{message_id}>\r\n\r\nHi.\r\n"
    return f"{prefix}{n}@sink.test", body.encode()


def test_a_thousand_queued_messages_reach_the_sink_once_each(
    nodes: list[Node], sink: SinkThread
) -> None:
    count, prefix = 1000, "drain"
    before = {n.name: n.log_text().count("queue.finished") for n in nodes}
    started = time.monotonic()
    enqueue_on(nodes[0], [_sink_message(n, prefix) for n in range(count)])
    queued = time.monotonic()
    wait_for(
        lambda: sum(_arrived(sink, prefix).values()) >= count and not _queued_for(nodes, prefix),
        "not everything delivered",
        WAIT,
        lambda: node_logs(nodes),
    )
    drained = time.monotonic()
    arrived = _arrived(sink, prefix)
    assert arrived == Counter({f"{prefix}{n}@node.test": 1 for n in range(count)})
    finished = {n.name: n.log_text().count("queue.finished") - before[n.name] for n in nodes}
    print(
        f"\n{count} queued in {queued - started:.1f} s (delivered meanwhile), the last at the"
        f" sink {drained - queued:.1f} s later; entries finished per node: {finished}"
    )
    assert sum(1 for done in finished.values() if done) >= 2, finished  # more than one node worked


# --- 5. kill -9 of a node under SMTP load and in the middle of draining the queue ---


def test_kill_9_of_a_node_loses_nothing_and_its_claims_are_taken_over(
    nodes: list[Node], sink: SinkThread
) -> None:
    """The node holding the most queue entries is killed with its whole process group
    while SMTP clients send to all three and every runner's deliveries are held at the
    sink unanswered (so that no message is in the window where a crash must send it
    twice): the other two keep taking mail, every message that got a 250 is stored once,
    and the dead node's entries are delivered by the others once its claims run out."""
    user = add_user(nodes[0], "loaded")
    count, prefix = 300, "crash"
    gate = _close_gate(sink, held=30)
    abandoned_before = sink.mx.abandoned
    load = SmtpLoad(nodes, user).start()
    try:
        enqueue_on(nodes[0], [_sink_message(n, prefix) for n in range(count)])
        claims = _held_claims(nodes, sink, prefix)
        victim = max(nodes, key=lambda node: len(claims.get(node.name, [])))
        survivors = [node for node in nodes if node is not victim]
        victims_entries = {r.address for e in claims[victim.name] for r in e.recipients}
        served = {n.name: load.count(n) for n in survivors}
        victim.kill_group()
        killed = time.monotonic()
        wait_for(
            lambda: all(load.count(n) >= served[n.name] + 10 for n in survivors),
            "the other nodes stopped taking mail",
            WAIT,
            lambda: node_logs(survivors),
        )
        sink.call(gate.set)
        wait_for(
            lambda: (
                sum(_arrived(sink, prefix).values()) >= count and not _queued_for(survivors, prefix)
            ),
            "the queue was not drained",
            WAIT,
            lambda: node_logs(survivors),
        )
        drained = time.monotonic() - killed
    finally:
        load.stop()
        sink.call(gate.set)
        sink.call(lambda: setattr(sink.mx, "gate", None))

    arrived = _arrived(sink, prefix)
    assert arrived == Counter({f"{prefix}{n}@node.test": 1 for n in range(count)})
    assert victims_entries and sink.mx.abandoned > abandoned_before  # it had some in flight
    if victim.isolated:  # taken over at the end of the lease, not by a look at its pids
        for node in survivors:
            taken = " ".join(re.findall(r"claims_taken_back.*", node.log_text()))
            assert victim.name not in taken, taken

    stored = _stored_once(survivors, user, load)
    print(
        f"\nkill -9 of {victim.name}: {len(load.acked)} messages acknowledged ({load.refused}"
        f" connections failed), {stored} stored; its {len(victims_entries)} queue"
        f" entries were delivered by the others, the queue drained {drained:.1f} s after"
    )


def test_a_node_stopped_mid_delivery_holds_up_the_others_only_briefly(
    nodes: list[Node], postgres: PostgresServer
) -> None:
    """A node stopped (SIGSTOP) while SMTP clients send to one mailbox through all three,
    caught with a delivery's transaction open: its connections stay up and the mailbox
    locked, as when its machine freezes or is cut off (a kill -9 closes them). The other
    two keep taking mail for that mailbox once the server ends the stuck sessions, and
    every message that got a 250 is stored once.

    Each message goes to a second mailbox too: a delivery into one mailbox is one
    statement that commits by itself, with nothing left open to be caught; one into two
    is a transaction. The stopped node's other deliveries waiting for the lock give up
    before it is free, so the others wait about one idle timeout (the time printed)."""
    user = add_user(nodes[0], "stalled")
    other = add_user(nodes[0], "stalled-copy")
    victim, survivors = nodes[2], nodes[:2]
    assert victim.proc is not None
    group = victim.proc.pid
    load = SmtpLoad(nodes, user, also=(other,)).start()
    try:
        wait_for(lambda: load.count(victim) >= 5, "no mail", WAIT, lambda: node_logs(nodes))
        for attempt in range(100):  # until it stops with a delivery's transaction open
            os.killpg(group, signal.SIGSTOP)
            time.sleep(0.2)  # what it sent before the stop reaches the database
            if stuck_transactions(victim, postgres.password, idle_for=0.1):
                break
            os.killpg(group, signal.SIGCONT)
            time.sleep(0.05 * (1 + attempt % 5))  # its sessions go on between the tries
        else:
            pytest.fail("the node never stopped inside a delivery's transaction")
        stopped = time.monotonic()
        served = {n.name: load.count(n) for n in survivors}
        wait_for(
            lambda: all(load.count(n) >= served[n.name] + 10 for n in survivors),
            "the other nodes are held up by the stopped one",
            WAIT,
            lambda: node_logs(survivors) + _load_report(load, stopped),
        )
        resumed = time.monotonic() - stopped
    finally:
        os.killpg(group, signal.SIGCONT)
        load.stop()
    stored = _stored_once(survivors, user, load)
    print(f"\nthe others took mail again {resumed:.1f} s after the stop; {stored} stored")
    print(_load_report(load, stopped))


def _load_report(load: SmtpLoad, since: float) -> str:
    """Where each client of `load` sends now, and what failed since `since`."""
    failed = [
        f"  {at - since:+.1f} s client {client} at {name}: {error}"
        for client, name, error, at in list(load.failures)
        if at >= since - 5
    ]
    return f"clients at: {load.where()}\nfailures:\n" + "\n".join(failed) + "\n"


def _close_gate(sink: SinkThread, held: int) -> asyncio.Event:
    """Make the sink hold every end of data after `held` more messages, until the gate
    returned is set."""
    gate = asyncio.Event()

    def close_gate() -> None:
        sink.mx.gate, sink.mx.gate_after = gate, len(sink.mx.messages) + held

    sink.call(close_gate)
    wait_for(lambda: sink.mx.gate is gate, "the gate", WAIT, lambda: "")
    return gate


def _stored_once(survivors: list[Node], user: str, load: SmtpLoad) -> int:
    """Check that the survivors show one mailbox where every message that got a 250 is,
    none twice and no UID skipped; how many it holds."""
    views = [inbox(node, user, PASSWORD) for node in survivors]
    assert views[0] == views[1]
    stored = Counter(views[0].message_ids.values())
    assert set(stored.values()) == {1}  # none twice
    acked = {message_id for message_id, _, _ in load.acked}
    assert acked <= set(stored), "a message that got 250 is missing"
    assert sorted(views[0].message_ids) == list(range(1, len(stored) + 1))  # no UID skipped
    return len(stored)


def _held_claims(nodes: list[Node], sink: SinkThread, prefix: str) -> dict[str, list[QueueEntry]]:
    """Once every runner holding entries has its deliveries held at the sink and every
    message the sink took is recorded as delivered: the claimed entries, by node."""
    by_node: dict[str, list[QueueEntry]] = {}

    def settled() -> bool:
        entries = [e for e in queue_entries(nodes[0]) if e.recipients[0].address.startswith(prefix)]
        pending = {r.address for e in entries for r in e.pending()}
        accepted = {r for m in list(sink.mx.messages) for r in m.recipients}
        runners = Counter(e.claimed_by for e in entries if e.claimed_by is not None)
        in_flight = sum(min(n, MAX_PER_DOMAIN // WORKERS) for n in runners.values())
        by_node.clear()
        for entry in entries:
            name = RunnerName.parse(entry.claimed_by) if entry.claimed_by else None
            if name is not None:
                by_node.setdefault(name.node, []).append(entry)
        return bool(runners) and sink.mx.waiting >= in_flight and not pending & accepted

    wait_for(settled, "the runners' deliveries are not held", WAIT, lambda: node_logs(nodes))
    return by_node
