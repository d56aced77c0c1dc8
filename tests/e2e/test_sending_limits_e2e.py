"""Sending limits over real sockets: two workers share the counts, a restart keeps them."""

from __future__ import annotations

import base64
import json
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"
PER_HOUR = 4
LIMITS = f"""
[submission]
messages_per_hour = {PER_HOUR}
recipients_per_message = 2
recipients_per_day = 100
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    root = Path(tmp_path_factory.mktemp("sending"))
    srv = make_server(root, LIMITS, services=("submissions",), top_config="workers = 2\n")
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def login(srv: PocztaServer, user: str) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL(
        "127.0.0.1", srv.ports["submissions"], timeout=10, context=client_tls()
    )
    client.ehlo("client.test")
    token = base64.b64encode(f"\0{user}\0{PASSWORDS[user]}".encode()).decode()
    code, _ = client.docmd("AUTH", f"PLAIN {token}")
    assert code == 235
    return client


def submit(srv: PocztaServer, user: str, recipients: list[str]) -> list[tuple[int, bytes]]:
    """One message on a new connection (so the kernel picks a worker): every reply of
    the transaction, stopping at the first refusal of MAIL FROM."""
    with login(srv, user) as client:
        replies = [client.mail(user)]
        if replies[0][0] != 250:
            return replies
        replies += [client.rcpt(r) for r in recipients]
        message = f"From: {user}\r\nSubject: limits\r\n\r\nhello\r\n"
        replies.append(client.data(message))
        return replies


def limit_lines(srv: PocztaServer, user: str) -> list[str]:
    return re.findall(rf"submission\.limit .*user={re.escape(user)}.*", srv.log_text())


def workers_of(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := re.search(r"worker=(\d+)", line))}


def wait_for_log(srv: PocztaServer, pattern: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(re.findall(pattern, srv.log_text())) < count:
        assert time.monotonic() < deadline, f"no {count} x {pattern!r} in the log"
        time.sleep(0.05)


def test_the_message_after_the_hourly_limit_is_deferred_by_every_worker(
    server: PocztaServer,
) -> None:
    wait_for_log(server, r"listening service=submissions", 2)
    for _ in range(PER_HOUR):
        replies = submit(server, ALICE, ["friend@elsewhere.test"])
        assert [code for code, _ in replies] == [250, 250, 250]
    # Each worker refuses, though at most one of them accepted all four: the count is
    # the store's, not a process's. Keep connecting until both have answered.
    for attempt in range(40):
        [(code, text)] = submit(server, ALICE, ["friend@elsewhere.test"])
        assert code == 450
        assert text.startswith(b"4.7.1 ") and b"in the last hour" in text
        wait_for_log(server, rf"submission\.limit .*user={ALICE}", attempt + 1)
        if len(workers_of(limit_lines(server, ALICE))) == 2:
            break
    else:
        raise AssertionError("every refused connection went to the same worker")
    assert all("limit=messages_per_hour" in line for line in limit_lines(server, ALICE))

    # Bob is not Alice.
    assert [code for code, _ in submit(server, BOB, ["friend@elsewhere.test"])] == [250, 250, 250]


def test_the_recipient_beyond_the_message_limit_gets_452(server: PocztaServer) -> None:
    replies = submit(server, BOB, ["a@elsewhere.test", "b@elsewhere.test", "c@elsewhere.test"])
    codes = [code for code, _ in replies]
    assert codes == [250, 250, 250, 452, 250]
    assert replies[3][1].startswith(b"4.5.3 Too many recipients")


def test_overrides_and_usage_show_in_the_cli(server: PocztaServer) -> None:
    shown = json.loads(server.cli_subprocess("user", "show", ALICE, "--json").stdout)
    assert shown["address"] == ALICE
    assert {b["name"] for b in shown["mailboxes"]} >= {"INBOX", "Sent", "Junk"}
    assert shown["usage"]["messages_last_hour"] == PER_HOUR
    assert shown["usage"]["recipients_last_day"] == PER_HOUR
    assert shown["limits"]["messages_per_hour"] == {"value": PER_HOUR, "source": "default"}

    server.cli("user", "limits", ALICE, "--messages-per-hour", str(PER_HOUR + 1))
    assert submit(server, ALICE, ["friend@elsewhere.test"])[0][0] == 250
    assert submit(server, ALICE, ["friend@elsewhere.test"])[0][0] == 450
    limits = json.loads(server.cli("user", "limits", ALICE, "--json").stdout)["limits"]
    assert limits["messages_per_hour"] == {"value": PER_HOUR + 1, "source": "user"}
    server.cli("user", "limits", ALICE, "--messages-per-hour", "default")
    limits = json.loads(server.cli("user", "limits", ALICE, "--json").stdout)["limits"]
    assert limits["messages_per_hour"] == {"value": PER_HOUR, "source": "default"}

    bad = server.cli("user", "limits", ALICE, "--recipients-per-day", "lots", check=False)
    assert bad.returncode == 2 and "is not a count" in bad.stderr


def test_the_count_survives_a_restart(server: PocztaServer) -> None:
    assert server.stop() == 0
    server.start()
    wait_for_log(server, r"listening service=submissions", 4)
    [(code, text)] = submit(server, ALICE, ["friend@elsewhere.test"])
    assert (code, text[:6]) == (450, b"4.7.1 ")
    assert [code for code, _ in submit(server, BOB, ["friend@elsewhere.test"])] == [250, 250, 250]
