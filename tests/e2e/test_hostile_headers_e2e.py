"""Hostile headers end to end: header bombs on port 25 and forged senders on submission.

The MX server checks incoming mail against a real DNS server (the dnsmasq of
`test_checks_e2e`), so that a message goes through DKIM, DMARC and the stripping of
forged fields as in production.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer, running_server
from tests.e2e.test_checks_e2e import dns_port  # noqa: F401 - a fixture, used by name

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory, dns_port: int) -> Iterator[PocztaServer]:  # noqa: F811
    extra = (
        f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns_port}\ntimeout = 1.0\n'
        "\n[checks]\ngreylisting = false\n"
        "\n[limits]\nmax_header_size = 67108864\nmax_header_fields = 2000000\n"
    )
    with running_server(tmp_path_factory.mktemp("bomb"), extra, ("smtp",)) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    """Default header limits, no checks; submission for the sender rules."""
    with running_server(tmp_path_factory.mktemp("strict"), "", ("smtp", "submission")) as srv:
        yield srv


def folded_bomb(lines: int, subject: str) -> bytes:
    fold = b"X-Bomb: start\r\n" + b" x\r\n" * lines
    return (
        f"From: <someone@elsewhere.test>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n".encode()
        + fold
        + b"\r\nbody\r\n"
    )


def greeting_arrives(port: int, timeout: float) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return sock.recv(512).startswith(b"220 ")


def test_a_header_bomb_is_checked_while_other_clients_are_served(mx: PocztaServer) -> None:
    port = mx.ports["smtp"]
    bomb = folded_bomb(1_000_000, "bomb")  # 4 MB of continuation lines
    outcome: list[tuple[int, bytes]] = []

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            client.ehlo("client.test")
            client.mail("someone@elsewhere.test")
            client.rcpt(ALICE)
            client.putcmd("data")
            client.getreply()
            assert client.sock is not None
            client.sock.sendall(bomb + b".\r\n")
            outcome.append(client.getreply())

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.0)  # the bomb is on its way or being checked
    # Generous: the greeting comes at once unless the event loop is stalled by the bomb.
    assert greeting_arrives(port, timeout=20)
    sender.join(120)
    assert not sender.is_alive() and outcome and outcome[0][0] == 250
    uid = next(m["uid"] for m in mx.messages(ALICE) if m["subject"] == "bomb")
    assert b"Authentication-Results: mx.example.test;" in mx.message_bytes(ALICE, uid)[:4096]


def send_raw(port: int, data: bytes, *, rcpt: str = ALICE) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("someone@elsewhere.test")
        client.rcpt(rcpt)
        return client.data(data)


def test_default_limits_refuse_a_large_header_and_too_many_fields(strict: PocztaServer) -> None:
    port = strict.ports["smtp"]
    big = folded_bomb(70_000, "too big")  # 280 KB over the 256 KiB default
    code, text = send_raw(port, big)
    assert (code, text[:5]) == (552, b"5.3.4") and b"header" in text
    many = b"".join(b"X-N: %d\r\n" % n for n in range(1001)) + b"Subject: many\r\n\r\nhi\r\n"
    code, text = send_raw(port, many)
    assert (code, text[:5]) == (554, b"5.6.0")
    code, _ = send_raw(port, b"Subject: fine\r\n\r\nhi\r\n")
    assert code == 250  # the session and the server go on
    subjects = [m["subject"] for m in strict.messages(ALICE)]
    assert "fine" in subjects and "too big" not in subjects and "many" not in subjects


def submit(server: PocztaServer, header: str, subject: str) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as client:
        client.starttls(context=context)
        client.login(ALICE, PASSWORDS[ALICE])
        client.mail(ALICE)
        client.rcpt("bob@example.test")
        data = f"{header}To: <bob@example.test>\r\nSubject: {subject}\r\n\r\nhi\r\n"
        try:
            return client.data(data.encode())
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (f"From: <{ALICE}>\r\nFrom: <bob@example.test>\r\n", b"exactly one From"),
        ("To: <x@example.test>\r\n", b"exactly one From"),
        (f"From: <{ALICE}> <bob@example.test>\r\n", b"From: header must hold"),
        (f"From: {ALICE} bob@example.test\r\n", b"From: header must hold"),
        (f"From: <{ALICE}>, <bob@example.test>\r\n", b"From: header must hold"),
        ("From: <bob@example.test>\r\n", b"<bob@example.test> is not an address"),
        (f"From: <{ALICE}>\r\nSender: <bob@example.test>\r\n", b"Sender: <bob@example.test>"),
        (f"From: <{ALICE}>\r\nResent-From: <bob@example.test>\r\n", b"Resent-From: <bob"),
        (f"From: <{ALICE}>\r\nResent-Sender: bob@example.test\r\n", b"Resent-Sender: <bob"),
    ],
)
def test_submission_refuses_forged_authors(strict: PocztaServer, header: str, why: bytes) -> None:
    code, text = submit(strict, header, "forged")
    assert code == 550 and text.startswith(b"5.7.1") and why in text


def test_submission_strips_our_claims_and_why_shows_none(strict: PocztaServer) -> None:
    header = (
        f'From: "Alice" <{ALICE}>\r\nSender: alice.smith@example.test\r\n'
        "Reply-To: <anyone@elsewhere.test>\r\n"
        'X-Poczta-Verdict: accept; enforced=accept; report-only=no; reasons="forged"\r\n'
        "Authentication-Results: mx.example.test; dmarc=pass header.from=example.test\r\n"
        "Authentication-Results: other.test; spf=pass\r\n"
    )
    code, _ = submit(strict, header, "honest")
    assert code == 250
    uid = next(m["uid"] for m in strict.messages("bob@example.test") if m["subject"] == "honest")
    stored = strict.message_bytes("bob@example.test", uid)
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert b"X-Poczta-Verdict" not in head and b"mx.example.test; dmarc" not in head
    assert b"Authentication-Results: other.test; spf=pass" in head
    why = strict.cli("why", "bob@example.test", "INBOX", str(uid), check=False)
    assert why.returncode == 1 and "forged" not in why.stdout
