"""Pipelined FETCHes against `poczta serve`: a client sending many at once reads exactly
the octets it would have read sending each after the previous one's answer."""

from __future__ import annotations

import re
import socket
import ssl
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
from tests.e2e.nodes import read_until

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BIG = 1_600_000  # octets: three such bodies are more than the store is asked for at once


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("fetch-run")
    with running_server(root, services=("imaps",), store=store_backend.config()) as srv:
        yield srv


def open_session(srv: PocztaServer, mailbox: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=10)
    sock = client_tls().wrap_socket(raw, server_hostname="localhost")
    read_until(sock, rb"\* OK")
    sock.sendall(f"a LOGIN {ALICE} {PASSWORDS[ALICE]}\r\nb SELECT {mailbox}\r\n".encode())
    read_until(sock, rb"b OK[^\r\n]*\r\n")
    return sock


def answered(sock: ssl.SSLSocket, lines: list[bytes], *, pipelined: bool) -> bytes:
    """What the server says to `lines` (tagged t0, t1, …), sent at once or one by one."""
    tags = [b"t%d" % n for n in range(len(lines))]
    commands = [tag + b" " + line + b"\r\n" for tag, line in zip(tags, lines, strict=True)]
    if pipelined:
        sock.sendall(b"".join(commands))
        return read_until(sock, rb"(^|\n)" + tags[-1] + rb" [A-Z]+[^\r\n]*\r\n")
    out = b""
    for tag, command in zip(tags, commands, strict=True):
        sock.sendall(command)
        out += read_until(sock, rb"(^|\n)" + tag + rb" [A-Z]+[^\r\n]*\r\n")
    return out


def both_ways(srv: PocztaServer, mailbox: str, lines: list[bytes]) -> tuple[bytes, bytes]:
    """The answers to `lines` pipelined in one session and one by one in another."""
    at_once, one_by_one = open_session(srv, mailbox), open_session(srv, mailbox)
    try:
        return (
            answered(at_once, lines, pipelined=True),
            answered(one_by_one, lines, pipelined=False),
        )
    finally:
        at_once.close()
        one_by_one.close()


def message(n: int, size: int = 0) -> bytes:
    head = b"From: carol@remote.test\r\nSubject: m%d\r\nX-N: %d\r\n\r\n" % (n, n)
    return head + b"line %d of body\r\n" % n * max(1, size // 16)


def test_a_pipelined_run_says_what_one_command_at_a_time_says(server: PocztaServer) -> None:
    fill_mailbox(
        server, "Run", [message(1), message(2, BIG), message(3, BIG), message(4), message(5, BIG)]
    )
    lines = [
        b"UID FETCH 2 BODY.PEEK[]",
        b"FETCH 1 (BODY.PEEK[HEADER] FLAGS)",
        b"UID FETCH 3 BODY.PEEK[]",
        b"FETCH 99 BODY.PEEK[]",  # out of range: BAD, and the run goes on
        b"UID FETCH 4,1 (RFC822.SIZE BODY.PEEK[TEXT])",
        b"FETCH 1 (BODY.PEEK[]",  # malformed: the reader's BAD between two runs
        b"UID FETCH 1:* (FLAGS)",
        b"UID FETCH 5 (MODSEQ BODY.PEEK[]<0.20>)",  # turns CONDSTORE on, told first
        b"FETCH 2:3 (ENVELOPE FLAGS)",
        b"UID FETCH 77 BODY.PEEK[]",  # no such UID: nothing but the OK
        b"UID FETCH 5 BODY.PEEK[]",
    ]
    at_once, one_by_one = both_ways(server, "Run", lines)
    assert at_once == one_by_one
    tagged = re.findall(rb"(?:^|\n)(t\d+) ([A-Z]+)", at_once)
    assert tagged == [(b"t%d" % n, b"BAD" if n in (3, 5) else b"OK") for n in range(len(lines))]
    assert at_once.count(b"BODY[] {%d}" % len(message(2, BIG))) == 3  # 2, 3 and 5
    assert re.search(
        rb"t6 OK[^\n]*\n\* OK \[HIGHESTMODSEQ \d+\] CONDSTORE enabled\r\n\* 5 FETCH", at_once
    )


def test_what_another_session_changed_is_told_as_one_at_a_time(server: PocztaServer) -> None:
    fill_mailbox(server, "Shared", [message(n) for n in range(1, 7)])
    at_once, one_by_one = open_session(server, "Shared"), open_session(server, "Shared")
    other = imap_login(server)
    other.select("Shared")
    other.store("2", "+FLAGS", "(\\Flagged)")
    other.store("3", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()
    lines = [
        b"FETCH 3 (UID BODY.PEEK[])",  # by number: the expunge is not told yet
        b"FETCH 4 (UID FLAGS)",
        b"UID FETCH 2 (FLAGS)",  # by UID: told now, before its answer
        b"FETCH 3 (UID FLAGS)",  # message 3 is now what was 4
        b"FETCH 6 (UID)",  # no longer exists: BAD
    ]
    try:
        pipelined = answered(at_once, lines, pipelined=True)
        one_at_a_time = answered(one_by_one, lines, pipelined=False)
    finally:
        at_once.close()
        one_by_one.close()
    assert pipelined == one_at_a_time
    told = [line for line in pipelined.split(b"\r\n") if line.startswith((b"* ", b"t"))]
    expunge = told.index(b"* 3 EXPUNGE")
    assert told[expunge - 1].startswith(b"t1 OK") and told[expunge + 1].startswith(b"* 2 FETCH")
    assert b"* 2 FETCH (FLAGS (\\Flagged))" in told[:2]
    assert b"* 3 FETCH (UID 4 FLAGS ())" in told and told[-1].startswith(b"t4 BAD")


def test_a_run_in_a_read_only_mailbox_leaves_messages_unseen(server: PocztaServer) -> None:
    fill_mailbox(server, "Examined", [message(n) for n in range(1, 4)])
    sock = open_session(server, "Examined")
    try:
        sock.sendall(b"e EXAMINE Examined\r\n")
        read_until(sock, rb"e OK[^\r\n]*\r\n")
        lines = [b"FETCH 1 BODY[]", b"UID FETCH 2 RFC822", b"FETCH 1:3 (FLAGS)"]
        out = answered(sock, lines, pipelined=True)
    finally:
        sock.close()
    assert b"* 1 FETCH (BODY[] {" in out and b"* 2 FETCH (UID 2 RFC822 {" in out
    assert out.count(b"FLAGS ()") == 3 and b"\\Seen" not in out
    client = imap_login(server)
    client.select("Examined")
    _, flags = client.fetch("1:3", "(FLAGS)")
    client.logout()
    assert flags == [b"1 (FLAGS ())", b"2 (FLAGS ())", b"3 (FLAGS ())"]


def test_more_commands_than_one_run_takes_are_answered_in_order(server: PocztaServer) -> None:
    fill_mailbox(server, "Many", [message(n, 40 * n) for n in range(1, 7)])
    lines = [
        b"UID FETCH %d BODY.PEEK[]" % (n % 6 + 1) if n % 3 else b"FETCH %d (FLAGS)" % (n % 6 + 1)
        for n in range(300)
    ]
    at_once, one_by_one = both_ways(server, "Many", lines)
    assert at_once == one_by_one
    tags = re.findall(rb"(?:^|\n)(t\d+) OK", at_once)
    assert tags == [b"t%d" % n for n in range(300)]
