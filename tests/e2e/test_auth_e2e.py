"""Logins against `poczta serve`: an attacker cannot lock a user out; one log line per login."""

from __future__ import annotations

import base64
import re
import smtplib
from collections.abc import Iterator

import pytest

from tests.e2e.harness import PASSWORDS, SERVICES, PocztaServer, client_tls, make_server

pytestmark = pytest.mark.e2e

# Production defaults but for the delays, kept short so the test stays fast.
FAST_THROTTLE = "[auth]\nfailure_delay = 0.01\nmax_failure_delay = 0.05\n"
ALICE = "alice@example.test"
ATTACKER = "127.0.0.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    srv = make_server(tmp_path_factory.mktemp("auth"), FAST_THROTTLE, (*SERVICES, "pop3s"))
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
