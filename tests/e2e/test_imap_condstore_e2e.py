"""CONDSTORE resync against `poczta serve` on each store: after another session's flag
changes, FETCH (CHANGEDSINCE) tells every changed message once, with FLAGS and MODSEQ,
in its answer or, for those the answer does not carry, as news before it."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import (
    PASSWORDS,
    PocztaServer,
    client_tls,
    fill_mailbox,
    imap_login,
    running_server,
)

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
WAIT = 10.0  # seconds: a bound for a hung test, not a measurement


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("condstore")
    with running_server(root, services=("imaps",), store=store_backend.config()) as srv:
        yield srv


class _Wire:
    """A raw IMAP session: the lines of each command's answer, news included."""

    def __init__(self, srv: PocztaServer) -> None:
        raw = socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=WAIT)
        self.sock: ssl.SSLSocket = client_tls().wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""
        self._until(rb"^\* OK")
        self.command(f"LOGIN {ALICE} {PASSWORDS[ALICE]}")

    def _until(self, pattern: bytes) -> list[bytes]:
        deadline = time.monotonic() + WAIT
        while not re.search(pattern, self.buffer, re.M):
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        lines = [line for line in self.buffer.split(b"\r\n") if line]
        self.buffer = b""
        return lines

    def command(self, text: str) -> list[bytes]:
        self.sock.sendall(b"t " + text.encode() + b"\r\n")
        lines = self._until(rb"^t (OK|NO|BAD)[^\r\n]*\r\n")
        assert lines[-1].startswith(b"t OK"), lines[-1]
        return lines[:-1]

    def close(self) -> None:
        self.command("LOGOUT")
        self.sock.close()


def _fetches(lines: list[bytes]) -> dict[int, list[bytes]]:
    """The FETCH responses by sequence number, every time one was told."""
    told: dict[int, list[bytes]] = {}
    for line in lines:
        if m := re.match(rb"\* (\d+) FETCH \((.*)\)$", line):
            told.setdefault(int(m.group(1)), []).append(m.group(2))
    return told


def _modseq(lines: list[bytes]) -> int:
    found = next(m for line in lines if (m := re.search(rb"HIGHESTMODSEQ (\d+)", line)))
    return int(found.group(1))


def test_changes_are_told_once_each_with_flags_and_modseq(server: PocztaServer) -> None:
    fill_mailbox(server, "Resync", [f"Subject: r{n}\r\n\r\nx\r\n".encode() for n in range(5)])
    client = _Wire(server)
    since = _modseq(client.command("SELECT Resync (CONDSTORE)"))
    other = imap_login(server, mailbox="Resync")
    other.uid("STORE", "2,4", "+FLAGS.SILENT", "($Kw)")
    other.uid("STORE", "5", "+FLAGS", "(\\Seen)")

    told = _fetches(client.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})"))
    assert sorted(told) == [2, 4, 5]
    for number, responses in told.items():
        assert len(responses) == 1, (number, responses)
        assert re.fullmatch(rb"UID %d FLAGS \([^)]*\) MODSEQ \(\d+\)" % number, responses[0])
    assert b"$Kw" in told[2][0] and b"\\Seen" in told[5][0]

    # the non-UID form over a set that leaves out a changed message: that one is news
    other.store("1,3", "+FLAGS", "(\\Flagged)")
    lines = client.command(f"FETCH 2:3 (FLAGS) (CHANGEDSINCE {since})")
    told = _fetches(lines)
    assert sorted(told) == [1, 2, 3] and all(len(r) == 1 for r in told.values())
    assert re.fullmatch(rb"FLAGS \(\\Flagged\) MODSEQ \(\d+\)", told[1][0])
    assert re.fullmatch(rb"FLAGS \(\\Flagged\) MODSEQ \(\d+\)", told[3][0])
    assert b"$Kw" in told[2][0]

    # without FLAGS in the answer: the flags come as news, the answer has the MODSEQ
    since = _modseq(client.command("STATUS Resync (HIGHESTMODSEQ)"))
    other.uid("STORE", "4", "-FLAGS.SILENT", "($Kw)")
    told = _fetches(client.command(f"UID FETCH 1:* (UID) (CHANGEDSINCE {since})"))
    assert list(told) == [4]
    assert re.fullmatch(rb"FLAGS \(\) MODSEQ \((\d+)\)", told[4][0])
    assert re.fullmatch(rb"UID 4 MODSEQ \(\d+\)", told[4][1])
    assert _fetches(client.command("NOOP")) == {}
    other.logout()
    client.close()


def test_a_silent_store_of_its_own_is_in_the_next_changedsince(server: PocztaServer) -> None:
    fill_mailbox(server, "Own", [f"Subject: o{n}\r\n\r\nx\r\n".encode() for n in range(3)])
    client = _Wire(server)
    since = _modseq(client.command("SELECT Own (CONDSTORE)"))
    other = imap_login(server, mailbox="Own")
    other.uid("STORE", "3", "+FLAGS.SILENT", "(\\Answered)")
    stored = _fetches(client.command("UID STORE 1 +FLAGS.SILENT (\\Seen)"))
    assert list(stored) == [3]  # the other session's change, told once as news
    told = _fetches(client.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})"))
    assert sorted(told) == [1, 3] and all(len(r) == 1 for r in told.values())
    assert b"\\Seen" in told[1][0] and b"\\Answered" in told[3][0]
    other.logout()
    client.close()
