"""Trace fields end to end: a hostile EHLO cannot plant headers, final delivery adds Return-Path."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.e2e.harness import PocztaServer, running_server

pytestmark = pytest.mark.e2e

PASSWORD = "trace-secret-3"
FORGED = b"Authentication-Results: mx.example.test; dmarc=pass"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    """A production config (no dev mode) with the MX and POP3S listeners."""
    with running_server(tmp_path_factory.mktemp("trace"), "", ("smtp", "pop3s")) as srv:
        yield srv


def new_user(srv: PocztaServer, name: str) -> str:
    address = f"{name}@example.test"
    srv.cli("user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    return address


def pop3_messages(srv: PocztaServer, user: str) -> list[bytes]:
    """Every message of the user's maildrop as a POP3 client reads it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], timeout=10, context=context)
    try:
        client.user(user)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        client.quit()


class RawSmtp:
    """A line-at-a-time SMTP client that sends exactly the bytes it is given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        """The next complete reply; its last line."""
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            if line[3:4] != b"-":
                return line

    def send(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_ehlo_with_a_bare_cr_is_refused_and_plants_no_header(server: PocztaServer) -> None:
    user = new_user(server, "ehlo")
    smtp = RawSmtp(server.ports["smtp"])
    try:
        assert smtp.reply().startswith(b"220 ")
        assert smtp.send(b"EHLO evil\r" + FORGED + b"\r\n").startswith(b"501 5.5.4 ")
        assert smtp.send(b"EHLO client.test\r\n").startswith(b"250 ")
        assert smtp.send(b"MAIL FROM:<x@elsewhere.test>\r\n").startswith(b"250 ")
        assert smtp.send(f"RCPT TO:<{user}>\r\n".encode()).startswith(b"250 ")
        assert smtp.send(b"DATA\r\n").startswith(b"354 ")
        message = b"From: x@elsewhere.test\r\nSubject: after a bad EHLO\r\n\r\nHi.\r\n.\r\n"
        assert smtp.send(message).startswith(b"250 ")
        assert smtp.send(b"QUIT\r\n").startswith(b"221 ")
    finally:
        smtp.close()
    [data] = pop3_messages(server, user)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert FORGED not in data and b"evil" not in data
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    lines = head.split(b"\r\n")
    assert lines[0] == b"Return-Path: <x@elsewhere.test>"
    assert lines[1] == b"Received: from client.test ([127.0.0.1])"


def test_final_delivery_replaces_the_clients_return_path(server: PocztaServer) -> None:
    user = new_user(server, "retpath")
    message = (
        b"Return-Path: <forged@evil.test>\r\n"
        b"From: x@elsewhere.test\r\n"
        b"return-path :\r\n <forged-too@evil.test>\r\n"
        b"Subject: return path\r\n\r\nBody mentions Return-Path: <kept@body.test>\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.sendmail("x@elsewhere.test", [user], message)
        client.sendmail("", [user], message.replace(b"return path", b"bounce"))
    first, bounce = pop3_messages(server, user)
    assert first.startswith(b"Return-Path: <x@elsewhere.test>\r\nReceived: from ")
    assert bounce.startswith(b"Return-Path: <>\r\nReceived: from ")
    for data in (first, bounce):
        assert b"forged" not in data
        assert data.lower().count(b"\nreturn-path") == 0  # ours is the only one, at the top
        assert b"\r\nFrom: x@elsewhere.test\r\nSubject: " in data
        assert data.endswith(b"\r\n\r\nBody mentions Return-Path: <kept@body.test>\r\n")
