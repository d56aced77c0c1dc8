"""Logins against `poczta serve`: an attacker cannot lock a user out; one log line per login."""

from __future__ import annotations

import base64
import poplib
import re
import smtplib
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import (
    PASSWORDS,
    SERVICES,
    PocztaServer,
    ScramClient,
    client_tls,
    make_server,
)

pytestmark = pytest.mark.e2e

# Production defaults but for the delays, kept short so the test stays fast.
FAST_THROTTLE = "[auth]\nfailure_delay = 0.01\nmax_failure_delay = 0.05\n"
ALICE = "alice@example.test"
ATTACKER = "127.0.0.2"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("auth")
    services = (*SERVICES, "pop3s")
    srv = make_server(root, FAST_THROTTLE, services, store=store_backend.config())
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def submissions(srv: PocztaServer, source: str = "127.0.0.1") -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL(
        "127.0.0.1",
        srv.ports["submissions"],
        timeout=10,
        context=client_tls(),
        source_address=(source, 0),
    )
    client.ehlo("client.test")
    return client


def auth_plain(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return client.docmd("AUTH", f"PLAIN {token}")


@pytest.mark.sqlite_only("the login throttle, not the store")
def test_an_attacker_cannot_lock_alice_out(server: PocztaServer) -> None:
    answers = set()
    for round_ in range(9):  # two per session: the third would end it
        with submissions(server, ATTACKER) as client:
            for attempt in range(2):
                answers.add(auth_plain(client, ALICE, f"guess-{round_}-{attempt}"))
    assert answers == {(535, b"5.7.8 Authentication credentials invalid")}
    with submissions(server, ATTACKER) as client:  # refused, even with the right password
        assert auth_plain(client, ALICE, PASSWORDS[ALICE]) in answers
    with submissions(server) as client:
        assert auth_plain(client, ALICE, PASSWORDS[ALICE])[0] == 235
    refused = re.findall(rf"auth\.failed .*ip={ATTACKER} .*reason=throttled", server.log_text())
    assert len(refused) == 18 + 1 - 5


def smtp_scram(srv: PocztaServer, user: str, password: str) -> int:
    """AUTH SCRAM-SHA-256 on submissions; the code of the last reply."""
    scram = ScramClient(user, password)
    with submissions(srv) as client:
        code, challenge = client.docmd("AUTH", f"SCRAM-SHA-256 {scram.first()}")
        assert code == 334
        code, _ = client.docmd(scram.final(challenge))
        if code == 334:  # the server-final, answered with an empty line
            code, _ = client.docmd("")
        return code


def pop3_scram(srv: PocztaServer, user: str, password: str) -> bool:
    """AUTH SCRAM-SHA-256 on pop3s; True when logged in."""
    scram = ScramClient(user, password)
    client = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], timeout=10, context=client_tls())
    try:
        challenge = client._shortcmd(f"AUTH SCRAM-SHA-256 {scram.first()}")
        client._shortcmd(scram.final(challenge[2:]))
        return client._shortcmd("").startswith(b"+OK")
    except poplib.error_proto:
        return False
    finally:
        client.quit()


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_each_scram_login_writes_one_log_line(server: PocztaServer, protocol: str) -> None:
    user, password = f"scram-{protocol}@example.test", "scram-pass-4711"
    server.cli("user", "add", user, "--password-stdin", stdin=password + "\n")
    if protocol == "smtp":
        assert smtp_scram(server, user, password) == 235
        assert smtp_scram(server, user, "not the password") == 535
    else:
        assert pop3_scram(server, user, password)
        assert not pop3_scram(server, user, "not the password")
    lines = re.findall(rf"(auth\.\w+) service=\w+ ip=127\.0\.0\.1 user={user}", server.log_text())
    assert lines == ["auth.ok", "auth.failed"]
