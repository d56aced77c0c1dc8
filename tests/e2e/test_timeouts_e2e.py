"""Slow clients over real sockets: a command line or message data trickled a byte at a time."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PocztaServer, make_server

pytestmark = pytest.mark.e2e

# Each trickled byte comes well within idle_timeout of the one before, so only the
# command deadline and the minimum data rate can end these sessions.
TIMEOUTS = """
[limits]
command_timeout = 2
idle_timeout = 3
min_data_rate = 2000
"""
TRICKLE_INTERVAL = 0.3
GIVE_UP = 8.0  # seconds of trickling after which the server has clearly let it go on


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    srv = make_server(Path(tmp_path_factory.mktemp("timeouts")), TIMEOUTS, ("smtp", "pop3"))
    srv.start()
    yield srv
    srv.stop()


def connect(srv: PocztaServer, service: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", srv.ports[service]), timeout=5)
    return sock, sock.recv(1000)


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return sock.recv(1000)


def trickle(sock: socket.socket, data: bytes, interval: float = TRICKLE_INTERVAL) -> bytes:
    """Send `data` one byte per `interval`; everything the server said until it closed.

    Stops with what was heard so far after GIVE_UP seconds, or when `data` runs out.
    """
    heard = b""
    sock.settimeout(interval)
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > GIVE_UP:
            break
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(1000)
        except TimeoutError:
            continue
        except OSError:  # reset after the server closed
            break
        if not chunk:
            break
        heard += chunk
    return heard


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1000) == b""
    except OSError:
        return True


@pytest.mark.parametrize(
    ("service", "greeting", "line", "reply"),
    [
        ("smtp", b"220", b"EHLO ", b"421 4.4.2 Command line not completed in time"),
        ("pop3", b"+OK", b"USER ", b"-ERR Command line not completed in time"),
    ],
)
def test_a_trickled_command_is_cut_at_the_command_deadline(
    server: PocztaServer, service: str, greeting: bytes, line: bytes, reply: bytes
) -> None:
    sock, said = connect(server, service)
    assert said.startswith(greeting)
    heard = trickle(sock, line + b"c" * 100 + b"\r\n")
    assert heard == reply + b", closing connection\r\n"
    assert closed(sock)
    sock.close()
    assert f"{service}.timeout deadline=command ip=127.0.0.1" in server.log_text()


def start_transaction(sock: socket.socket) -> None:
    assert command(sock, b"EHLO client.test").startswith(b"250")
    assert command(sock, b"MAIL FROM:<carol@elsewhere.test>").startswith(b"250")
    assert command(sock, b"RCPT TO:<alice@example.test>").startswith(b"250")


def start_data(sock: socket.socket) -> None:
    start_transaction(sock)
    assert command(sock, b"DATA").startswith(b"354")


@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_message_data_below_the_minimum_rate_is_refused(server: PocztaServer, verb: str) -> None:
    sock, _ = connect(server, "smtp")
    subject = f"trickled {verb}"
    body = f"Subject: {subject}\r\n\r\n".encode() + b"x" * 1000 + b"\r\n"
    if verb == "DATA":
        start_data(sock)
        rest = body + b".\r\n"
    else:  # the chunk's size is announced up front; no reply until it is all there
        start_transaction(sock)
        sock.sendall(f"BDAT {len(body)} LAST\r\n".encode())
        rest = body
    sock.sendall(rest[:30])
    heard = trickle(sock, rest[30:])
    assert heard == b"421 4.4.2 Message data arriving too slowly, closing connection\r\n"
    assert closed(sock)
    sock.close()
    assert subject not in [m["subject"] for m in server.messages("alice@example.test")]


def test_a_slow_but_steady_message_gets_through(server: PocztaServer) -> None:
    """About 5000 bytes/s for longer than idle_timeout: above the minimum, so accepted."""
    sock, _ = connect(server, "smtp")
    start_data(sock)
    sock.sendall(b"Subject: steady\r\n\r\n")
    line = b"y" * 98 + b"\r\n"
    started = time.monotonic()
    while time.monotonic() - started < 4:
        sock.sendall(line * 15)
        time.sleep(TRICKLE_INTERVAL)
    assert command(sock, b".").startswith(b"250 2.0.0")
    assert command(sock, b"QUIT").startswith(b"221")
    sock.close()
    assert "steady" in [m["subject"] for m in server.messages("alice@example.test")]
