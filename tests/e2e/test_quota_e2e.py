"""Quotas over real sockets: imaplib's QUOTA commands and APPEND / COPY refusals, smtplib's
452 (or 552, when so configured) at RCPT and after DATA, and `poczta user quota` /
`poczta user show` beside them."""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, running_server
from tests.e2e.harness import imap_login as login

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("quota")
    services = ("smtp", "submissions", "imaps")
    with running_server(root, services=services, store=store_backend.config()) as srv:
        yield srv


def message(subject: str, padding: int = 0) -> bytes:
    body = "Hello.\r\n" + "x" * padding + "\r\n"
    return (
        f"From: carol@remote.test\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}"
    ).encode()


def quota_of(srv: PocztaServer, user: str) -> dict[str, dict[str, object]]:
    shown = json.loads(srv.cli("user", "quota", user, "--json").stdout)
    assert shown["address"] == user
    quota: dict[str, dict[str, object]] = shown["quota"]
    return quota


def messages_in(client: imaplib.IMAP4_SSL, mailbox: str) -> int:
    _, data = client.status(mailbox, "(MESSAGES)")
    found = re.search(rb"MESSAGES (\d+)", data[0] or b"")
    assert found is not None
    return int(found.group(1))


def test_imap_tells_the_quota_and_refuses_what_would_pass_it(server: PocztaServer) -> None:
    client = login(server)
    capabilities = set(client.capability()[1][0].split())
    assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"} <= capabilities
    assert b"QUOTASET" not in capabilities
    status, data = client.getquotaroot("INBOX")
    assert status == "OK" and data == [[b'"INBOX"'], [None]]  # no limit: no quota root
    assert client.append("INBOX", None, None, message("first", 2000))[0] == "OK"
    used = int(quota_of(server, ALICE)["storage"]["used"])  # type: ignore[call-overload]
    assert used == len(message("first", 2000))
    room = used + 2500  # for a small message, not for a copy of the first
    server.cli("user", "quota", ALICE, "--storage", str(room), "--messages", "10")

    status, data = client.getquotaroot("inbox")
    kib = -(-used // 1024)
    limit = room // 1024
    assert status == "OK"
    assert data == [[b'"INBOX" ""'], [f'"" (STORAGE {kib} {limit} MESSAGE 1 10)'.encode()]]
    assert client.getquota('""') == ("OK", [f'"" (STORAGE {kib} {limit} MESSAGE 1 10)'.encode()])

    status, data = client.append("INBOX", None, None, message("too big", 4000))
    assert status == "NO" and b"[OVERQUOTA]" in data[0]
    assert messages_in(client, "INBOX") == 1  # nothing was stored
    assert client.append("INBOX", None, None, message("fits", 500))[0] == "OK"

    client.select("INBOX")
    status, data = client.copy("1", "Archive")
    assert status == "NO" and b"[OVERQUOTA]" in data[0]
    assert messages_in(client, "Archive") == 0
    assert client.uid("MOVE", "1:*", "Archive")[0] == "OK"  # moving takes nothing more
    assert messages_in(client, "Archive") == 2

    status, data = client.setquota('""', "(STORAGE 1000000)")
    assert status == "NO" and b"[NOPERM]" in data[0]
    client.logout()
    assert "quota.refused" in server.log_text()


def test_smtp_refuses_a_full_mailbox_at_rcpt_and_after_data(server: PocztaServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.sendmail("carol@remote.test", [BOB], message("before"))
    used = int(quota_of(server, BOB)["storage"]["used"])  # type: ignore[call-overload]
    server.cli("user", "quota", BOB, "--storage", str(used + 1000))
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("carol@remote.test", ["SIZE=5000"])[0] == 250
        code, text = client.rcpt(BOB)  # the declared size does not fit
        assert (code, text) == (452, b"4.2.2 <bob@example.test>: Mailbox full")
        client.rset()
        assert client.mail("carol@remote.test")[0] == 250
        assert client.rcpt(BOB)[0] == 250  # room for a small message
        code, text = client.data(message("too big", 3000))
        assert (code, text) == (452, b"4.2.2 Mailbox full")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.sendmail("carol@remote.test", [BOB], message("small"))
    server.cli("user", "quota", BOB, "--messages", "2")  # now full by count
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.test")
        client.mail("carol@remote.test")
        assert client.rcpt(BOB) == (452, b"4.2.2 <bob@example.test>: Mailbox full")
    assert [m["subject"] for m in server.messages(BOB)] == ["before", "small"]


def test_submission_to_a_full_local_user_counts_the_same(server: PocztaServer) -> None:
    server.cli("user", "quota", BOB, "--messages", "1")
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], timeout=10, context=client_tls()
    ) as client:
        client.ehlo("client.test")
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
        assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235
        assert client.mail(ALICE)[0] == 250
        assert client.rcpt(BOB) == (452, b"4.2.2 <bob@example.test>: Mailbox full")
    shown = json.loads(server.cli("user", "show", BOB, "--json").stdout)
    assert shown["quota"]["messages"] == {
        "used": 2,
        "limit": 1,
        "source": "user",
        "percent": 200.0,
    }
    server.cli("user", "quota", BOB, "--messages", "default", "--storage", "default")
    assert quota_of(server, BOB)["storage"]["limit"] == 0


def test_a_permanent_over_quota_answer_bounces_at_rcpt_and_after_data(tmp_path: Path) -> None:
    quota = '[quota]\nstorage = 3000\nover_quota = "permanent"\n'
    with running_server(tmp_path, quota, services=("smtp",)) as srv:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as client:
            client.sendmail("carol@remote.test", [BOB], message("first"))
            client.ehlo("client.test")
            assert client.mail("carol@remote.test", ["SIZE=5000"])[0] == 250
            assert client.rcpt(BOB) == (552, b"5.2.2 <bob@example.test>: Mailbox full")
            client.rset()
            assert client.mail("carol@remote.test")[0] == 250
            assert client.rcpt(BOB)[0] == 250  # no size declared: room for a small one
            assert client.data(message("too big", 4000)) == (552, b"5.2.2 Mailbox full")
        assert [m["subject"] for m in srv.messages(BOB)] == ["first"]
        assert "quota.refused" in srv.log_text()
