"""Limits over real sockets: connections per IP, idle timeout, error count, line and size limits."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PocztaServer, make_server

pytestmark = pytest.mark.e2e

LIMITS = """
[limits]
max_connections_per_ip = 3
idle_timeout = 1
max_errors = 3
max_message_size = 20000
max_recipients = 2
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    server = make_server(Path(tmp_path_factory.mktemp("limited")), LIMITS)
    server.start()
    yield server
    server.stop()


def connect(server: PocztaServer) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=5)
    return sock, sock.makefile("rb")


def test_connections_per_ip_are_limited(limited: PocztaServer) -> None:
    held = [connect(limited) for _ in range(3)]
    for _sock, reader in held:
        assert reader.readline().startswith(b"220")  # type: ignore[attr-defined]
    sock, reader = connect(limited)
    assert reader.readline().startswith(b"421 4.7.0")  # type: ignore[attr-defined]
    sock.close()
    for sock, _ in held:
        sock.close()


def test_idle_connection_is_closed(limited: PocztaServer) -> None:
    sock, reader = connect(limited)
    assert reader.readline().startswith(b"220")  # type: ignore[attr-defined]
    started = time.monotonic()
    assert reader.readline().startswith(b"421 4.4.2")  # type: ignore[attr-defined]
    assert reader.readline() == b""  # type: ignore[attr-defined]
    assert time.monotonic() - started < 4
    sock.close()


def test_too_many_errors_close_the_session(limited: PocztaServer) -> None:
    sock, reader = connect(limited)
    reader.readline()  # type: ignore[attr-defined]
    replies = []
    for _ in range(4):
        sock.sendall(b"BOGUS\r\n")
        replies.append(reader.readline())  # type: ignore[attr-defined]
    assert replies[0].startswith(b"500")
    assert any(r.startswith(b"421") for r in replies)
    sock.close()


def test_overlong_line_is_refused_and_session_goes_on(limited: PocztaServer) -> None:
    sock, reader = connect(limited)
    reader.readline()  # type: ignore[attr-defined]
    sock.sendall(b"NOOP " + b"x" * 100_000 + b"\r\nNOOP\r\n")
    assert reader.readline().startswith(b"500 5.5.2")  # type: ignore[attr-defined]
    assert reader.readline().startswith(b"250")  # type: ignore[attr-defined]
    sock.close()


def test_message_size_and_recipient_limits(limited: PocztaServer) -> None:
    with smtplib.SMTP("127.0.0.1", limited.ports["smtp"], timeout=10) as client:
        client.ehlo("client.test")
        assert client.esmtp_features["size"] == "20000"
        client.mail("carol@elsewhere.test")
        assert client.rcpt("alice@example.test")[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        assert client.rcpt("info@example.test")[0] == 452
        code, _ = client.data(b"Subject: big\r\n\r\n" + b"y" * 30_000 + b"\r\n")
        assert code == 552
        code, _ = client.mail("carol@elsewhere.test", ["SIZE=50000"])
        assert code == 552
    assert "big" not in [m["subject"] for m in limited.messages("alice@example.test")]


def test_whole_session_time_limit(tmp_path: Path) -> None:
    """A client that never idles is still cut off when session_timeout runs out."""
    server = make_server(tmp_path, "\n[limits]\nidle_timeout = 30\nsession_timeout = 2\n")
    server.start()
    try:
        sock, reader = connect(server)
        assert reader.readline().startswith(b"220")  # type: ignore[attr-defined]
        started = time.monotonic()
        last = b""
        while time.monotonic() - started < 10:
            sock.sendall(b"NOOP\r\n")
            last = reader.readline()  # type: ignore[attr-defined]
            if not last.startswith(b"250"):
                break
            time.sleep(0.2)
        assert last.startswith(b"421 4.4.2"), last
        assert 1.5 < time.monotonic() - started < 6
        sock.close()
        # Ended by the session itself between two commands, not by the listener's backstop.
        assert "smtp.timeout deadline=session ip=127.0.0.1" in server.log_text()
    finally:
        server.stop()
