"""Three `poczta serve` nodes sharing one PostgreSQL database, and clients to load them.

Each node listens on a loopback address of its own (127.0.0.2, .3 and .4), has its own
data directory and hostname, and all have the same `[store]`. The first node's data
directory is set up the usual way (`poczta init` and the test users, which land in the
database); the others get a copy of it (the certificate) and share the database. Every
node runs in a process group of its own, for `kill_group`, and where `unshare` can make
one, in a PID namespace of its own (`isolated`): then no node can look at another's
processes, as on three machines, and the queue claims of a node that died are taken
over once their lease runs out, not because its pids are seen to be free.

`SmtpLoad` keeps SMTP clients sending to the nodes from threads and records which
Message-IDs got a 250, from which node; `inbox` reads a mailbox over IMAP.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from poczta.config import load_config
from poczta.message import parse_message
from poczta.store import open_store
from poczta.store.base import Outbound, QueueEntry
from tests.e2e.harness import (
    POCZTA,
    PocztaServer,
    client_tls,
    free_port,
    make_server,
    postgres_store_config,
    remove_sqlite_files,
    start_servers,
    stop_servers,
)
from tests.pg_server import PostgresServer

__all__ = [
    "HOSTS",
    "Inbox",
    "Node",
    "SmtpLoad",
    "enqueue_on",
    "flags_by_uid",
    "idle_session",
    "imap_login",
    "inbox",
    "make_nodes",
    "message_for",
    "queue_entries",
    "read_until",
    "send_messages",
    "start_nodes",
    "stop_nodes",
    "stuck_transactions",
    "wait_for",
]

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
UNSHARE = shutil.which("unshare")


@dataclass
class Node(PocztaServer):
    """A `PocztaServer` started in a process group of its own (in a PID namespace of its
    own too, when `isolated`)."""

    isolated: bool = False
    dsn: str = ""  # the database's URL, without the password

    def launch(self, *, own_group: bool = True) -> None:
        """Start `poczta serve`, always in a process group of its own (`own_group` is
        `PocztaServer.launch`'s, ignored), without waiting for it."""
        log = self.log_path.open("ab")
        prefix = [UNSHARE, "--pid", "--fork", "--mount-proc"] if self.isolated and UNSHARE else []
        serve = [*POCZTA, "serve", "-c", str(self.config)]
        self.proc = subprocess.Popen(
            [*prefix, *serve], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """As `PocztaServer.stop`; an isolated node's signal goes to its first process in
        the namespace (`unshare` passes none on)."""
        if self.isolated and self.proc is not None and self.proc.poll() is None:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            for pid in children.read_text().split():
                os.kill(int(pid), sig)
        return super().stop(sig, timeout)

    @property
    def name(self) -> str:
        return self.hostname


def make_nodes(
    root: Path,
    postgres: PostgresServer,
    *,
    services: tuple[str, ...],
    extra_config: str = "",
    top_config: str = "workers = 2\n",
) -> list[Node]:
    """Three nodes on a new database, not started, each in a PID namespace of its own when
    this machine lets `unshare` make one."""
    isolated = _can_unshare()
    dsn = postgres.dsn(postgres.new_database())
    config = postgres_store_config(dsn, postgres.password_file) + extra_config
    (root / "node1").mkdir()
    first = make_server(
        root / "node1", config, services, top_config, host=HOSTS[0], hostname="node1.example.test"
    )
    remove_sqlite_files(first.root / "data")  # what `poczta init` made
    nodes = []
    for n, host in enumerate(HOSTS):
        node_root = root / f"node{n + 1}"
        node = Node(
            node_root,
            first.ports if n == 0 else {name: free_port() for name in services},
            config,
            top_config=top_config,
            host=host,
            hostname=f"node{n + 1}.example.test",
            isolated=isolated,
            dsn=dsn,
        )
        if n:
            shutil.copytree(first.root / "data", node_root / "data")
        node.write_config()
        nodes.append(node)
    return nodes


def _can_unshare() -> bool:
    if UNSHARE is None:
        return False
    probe = [UNSHARE, "--pid", "--fork", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


def start_nodes(nodes: Sequence[Node]) -> None:
    """Start every node that does not run, at once."""
    start_servers(*(node for node in nodes if node.proc is None))


def stop_nodes(nodes: Sequence[Node]) -> None:
    """Stop every node that runs (all are told at once)."""
    stop_servers(*nodes)


# --- SMTP ---------------------------------------------------------------------


def message_for(to: str, message_id: str) -> bytes:
    return (
        f"From: carol@remote.test\r\nTo: {to}\r\nSubject: {message_id}\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nHello.\r\n"
    ).encode()


def send_messages(node: PocztaServer, to: str, message_ids: Sequence[str]) -> list[str]:
    """Send one message per id over one SMTP connection; the ids that got a 250."""
    acked = []
    with smtplib.SMTP(node.host, node.ports["smtp"], timeout=30) as smtp:
        for message_id in message_ids:
            smtp.sendmail("carol@remote.test", [to], message_for(to, message_id))
            acked.append(message_id)
    return acked


@dataclass
class SmtpLoad:
    """`clients` threads sending to `to` (and `also`) until stopped, `per_connection` messages a
    connection, each at a node of `nodes` of its own: after a connection there fails, it
    tries the next node, and the next, and after a connection that worked it is back at
    its own. So a node that answers again is sent mail again, as a client's retries
    would find it, whatever another node did meanwhile. `acked` holds (Message-ID, node
    name, time of the 250), `failures` (client, node name, error, time) each connection
    that failed, `targets` the node each client sends to now."""

    nodes: Sequence[Node]
    to: str
    clients: int = 6
    also: Sequence[str] = ()  # more recipients of each message
    per_connection: int = 5
    acked: list[tuple[str, str, float]] = field(default_factory=list)
    refused: int = 0  # connections or messages that failed
    failures: list[tuple[int, str, str, float]] = field(default_factory=list)
    targets: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SmtpLoad:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def where(self) -> dict[int, str]:
        """The node each client sends to now, by client."""
        with self._lock:
            return dict(self.targets)

    def count(self, node: Node | None = None) -> int:
        with self._lock:
            return sum(1 for _, name, _ in self.acked if node is None or name == node.name)

    def _client(self, client: int) -> None:
        serial = 0
        home = target = client % len(self.nodes)
        while not self._stop.is_set():
            node = self.nodes[target]
            with self._lock:
                self.targets[client] = node.name
            try:
                with smtplib.SMTP(node.host, node.ports["smtp"], timeout=10) as smtp:
                    for _ in range(self.per_connection):
                        serial += 1
                        message_id = f"load.{client}.{serial}@remote.test"
                        smtp.sendmail(
                            "carol@remote.test",
                            [self.to, *self.also],
                            message_for(self.to, message_id),
                        )
                        with self._lock:
                            self.acked.append((message_id, node.name, time.monotonic()))
                target = home
            except (OSError, smtplib.SMTPException) as exc:
                with self._lock:
                    self.refused += 1
                    self.failures.append((client, node.name, repr(exc), time.monotonic()))
                target = (target + 1) % len(self.nodes)  # that node may be gone
                time.sleep(0.05)


# --- IMAP ---------------------------------------------------------------------


@dataclass(frozen=True)
class Inbox:
    """What a node's IMAP says of a mailbox."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    message_ids: dict[int, str]  # by UID


_STATUS = re.compile(rb"(UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ) (\d+)")
# the Message-ID is the last field of an ENVELOPE (read from what the store cached)
_ENVELOPE_ID = re.compile(rb'UID (\d+) ENVELOPE \(.*?"<([^>]+)>"\)\)', re.S)


def imap_login(node: PocztaServer, user: str, password: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(node.host, node.ports["imaps"], ssl_context=client_tls(), timeout=30)
    client.login(user, password)
    return client


def inbox(node: PocztaServer, user: str, password: str, mailbox: str = "INBOX") -> Inbox:
    """The mailbox's STATUS and each message's UID and Message-ID, over `node`'s IMAP."""
    client = imap_login(node, user, password)
    try:
        _, status = client.status(mailbox, "(UIDVALIDITY UIDNEXT HIGHESTMODSEQ)")
        values = {key.decode(): int(value) for key, value in _STATUS.findall(status[0])}
        client.select(mailbox, readonly=True)
        _, data = client.uid("FETCH", "1:*", "(UID ENVELOPE)")
        text = b"".join(b"".join(p) if isinstance(p, tuple) else p for p in data if p)
        found = {int(uid): message_id.decode() for uid, message_id in _ENVELOPE_ID.findall(text)}
        assert len(found) == text.count(b" ENVELOPE ("), text[:500]
        return Inbox(values["UIDVALIDITY"], values["UIDNEXT"], values["HIGHESTMODSEQ"], found)
    finally:
        client.logout()


def read_until(sock: ssl.SSLSocket, pattern: bytes, timeout: float = 10.0) -> bytes:
    """Read from `sock` until what came matches `pattern` (at most `timeout` seconds)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, data):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; read {data!r}"
        data += chunk
    return data


def idle_session(node: PocztaServer, user: str, password: str) -> tuple[ssl.SSLSocket, int]:
    """An IMAP session on `node` idling in the user's INBOX, and the INBOX's EXISTS then."""
    raw = socket.create_connection((node.host, node.ports["imaps"]), timeout=30)
    sock = client_tls().wrap_socket(raw, server_hostname="localhost")
    read_until(sock, rb"\* OK")
    sock.sendall(f"a LOGIN {user} {password}\r\nb SELECT INBOX\r\n".encode())
    selected = read_until(sock, rb"b OK")
    exists = re.search(rb"\* (\d+) EXISTS", selected)
    assert exists is not None, selected
    sock.sendall(b"c IDLE\r\n")
    read_until(sock, rb"\+ idling")
    return sock, int(exists.group(1))


def flags_by_uid(responses: list[Any], *, with_uid: bool = True) -> dict[int, set[str]]:
    """The FLAGS of FETCH responses, by UID (by message number, without `with_uid`)."""
    found = {}
    for response in responses:
        if not isinstance(response, bytes):
            continue
        key = re.search(rb"UID (\d+)" if with_uid else rb"^(\d+) \(", response)
        flags = re.search(rb"FLAGS \(([^)]*)\)", response)
        assert key is not None and flags is not None, response
        found[int(key.group(1))] = set(flags.group(1).decode().split())
    return found


# --- the queue ----------------------------------------------------------------


def enqueue_on(node: PocztaServer, messages: Sequence[tuple[str, bytes]]) -> None:
    """Queue each (recipient, body) from alice through the store of `node`'s config, the
    way a submission is (`MailStore.accept`: the body and the entry in one commit)."""

    async def main() -> None:
        store = await open_store(load_config(node.config))

        async def queue_one(recipient: str, body: bytes) -> None:
            outbound = Outbound("alice@example.test", (recipient,))
            await store.accept(body, parse_message(body), datetime.now(UTC), (), outbound)

        try:
            for start in range(0, len(messages), 100):  # a hundred transactions at once
                batch = messages[start : start + 100]
                await asyncio.gather(*(queue_one(r, b) for r, b in batch))
        finally:
            await store.close()

    asyncio.run(main())


def queue_entries(node: PocztaServer) -> list[QueueEntry]:
    """The queue, as the store of `node`'s config holds it."""

    async def main() -> list[QueueEntry]:
        store = await open_store(load_config(node.config))
        try:
            return await store.list_queue()
        finally:
            await store.close()

    return asyncio.run(main())


def stuck_transactions(node: Node, password: str, idle_for: float = 0.5) -> int:
    """How many of `node`'s sessions with the database have a transaction idle for
    `idle_for` seconds or more that has changed a mailbox's row (a delivery that took
    its UID: the mailbox is locked). Only the node's own are counted, found by the
    client ports of its processes' TCP sockets: on a loaded machine a live node's
    transaction may sit idle that long too."""
    assert node.proc is not None
    ports = sorted(_group_tcp_ports(node.proc.pid))

    async def main() -> int:
        conn = await asyncpg.connect(node.dsn, password=password, timeout=10)
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity a WHERE application_name = 'poczta'"
                " AND state = 'idle in transaction' AND client_port = ANY($2::int[])"
                " AND state_change < now() - make_interval(secs => $1)"
                " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
                "  AND l.relation = 'mailboxes'::regclass AND l.mode = 'RowExclusiveLock')",
                idle_for,
                ports,
            )
            return int(found)
        finally:
            await conn.close()

    return asyncio.run(main())


def _group_tcp_ports(group: int) -> set[int]:
    """The local ports of the TCP sockets the processes of process group `group` hold."""
    inodes = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for fd in (stat.parent / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone meanwhile
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def wait_for(
    condition: Callable[[], object], what: str, timeout: float, log: Callable[[], str]
) -> None:
    """Poll `condition` every 50 ms until it holds; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {log()[-3000:]}"
        time.sleep(0.05)
