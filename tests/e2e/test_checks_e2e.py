"""The checks of incoming mail end to end: `poczta serve` asking a real DNS server (dnsmasq).

dnsmasq serves the test zones on loopback: SPF and DMARC records of the sender domains,
a DKIM key, and a blocklist that lists 127.0.0.3. Real SMTP clients connect from
127.0.0.2, .3 and .4 and get greylisted, refused, filed in Junk or delivered; a
forwarded message (SPF fails, the author's DKIM signature passes DMARC) is delivered.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Iterator

import pytest

from poczta.mailauth.dkim_sign import generate_dkim_key, sign_dkim
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PASSWORDS, PocztaServer, make_server

pytestmark = pytest.mark.e2e

PRIVATE_KEY, KEY_RECORD = generate_dkim_key("ed25519-sha256")
RCPT = "alice@example.test"
GOOD, LISTED, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ZONES = {
    "good.test": f"v=spf1 ip4:{GOOD} -all",
    "_dmarc.good.test": "v=DMARC1; p=reject",
    "sel._domainkey.good.test": KEY_RECORD,
    "junky.test": "v=spf1 ip4:192.0.2.1 -all",
    "strict.test": "v=spf1 ip4:192.0.2.1 -all",
    "_dmarc.strict.test": "v=DMARC1; p=reject",
    "3.0.0.127.bl.test": "listed for testing",
    "fwd.test": "v=spf1 -all",
    "_dmarc.fwd.test": "v=DMARC1; p=quarantine",
    "sel._domainkey.fwd.test": KEY_RECORD,
}


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("dnsmasq")
    extra = ["--address=/3.0.0.127.bl.test/127.0.0.2"]
    with dnsmasq_server(workdir, txt=ZONES, extra=extra) as port:
        yield port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns_port: int) -> Iterator[PocztaServer]:
    extra = (
        f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns_port}\ntimeout = 1.0\n'
        '\n[checks]\ndnsbl_ip_zones = ["bl.test"]\ngreylist_delay = 1\n'
    )
    srv = make_server(tmp_path_factory.mktemp("checks"), extra, services=("smtp", "submission"))
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def message(sender: str, subject: str, *, signed: bool = False) -> bytes:
    data = (
        f"From: <{sender}>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n\r\nHello Alice.\r\n"
    ).encode()
    if signed:
        domain = sender.rpartition("@")[2]
        header = sign_dkim(
            data, domain=domain, selector="sel", private_key=PRIVATE_KEY, algorithm="ed25519-sha256"
        )
        data = header + data
    return data


def attempt(port: int, source: str, sender: str, data: bytes) -> tuple[int, int | None, str]:
    """One SMTP transaction from `source`: (RCPT code, DATA code or None, last reply)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        client.ehlo("client.test")
        client.mail(sender)
        code, reply = client.rcpt(RCPT)
        if code != 250:
            return code, None, reply.decode()
        code_data, reply = client.data(data)
        return code, code_data, reply.decode()


def test_incoming_mail_is_checked(server: PocztaServer) -> None:
    port = server.ports["smtp"]
    good = ("alice@good.test", message("alice@good.test", "good one", signed=True))
    junk = ("bob@junky.test", message("bob@junky.test", "spf fails"))
    strict = ("eve@strict.test", message("eve@strict.test", "dmarc reject"))

    assert attempt(port, GOOD, *good)[0] == 451
    code, _, reply = attempt(port, OTHER, *junk)
    assert code == 451 and "Greylisted, please try again in 1 seconds" in reply
    assert attempt(port, OTHER, *strict)[0] == 451
    code, _, reply = attempt(port, LISTED, *good)
    assert code == 554 and "blocked using bl.test" in reply and "listed for testing" in reply

    time.sleep(1.2)
    assert attempt(port, GOOD, *good)[:2] == (250, 250)
    assert attempt(port, OTHER, *junk)[:2] == (250, 250)
    code, code_data, reply = attempt(port, OTHER, *strict)
    assert (code, code_data) == (250, 550) and "DMARC" in reply

    inbox = server.messages(RCPT)
    junk_box = json.loads(server.cli("mail", "list", RCPT, "--mailbox", "Junk", "--json").stdout)
    assert [m["subject"] for m in inbox] == ["good one"]
    assert [m["subject"] for m in junk_box] == ["spf fails"]

    stored = server.message_bytes(RCPT, inbox[0]["uid"]).decode()
    assert stored.startswith("Return-Path: <alice@good.test>\r\nX-Poczta-Verdict: accept;")
    header = stored.split("Authentication-Results: ", 1)[1].split("\r\nReceived:", 1)[0]
    assert header.startswith("mx.example.test;")
    for expected in ("spf=pass", "dkim=pass", "dmarc=pass"):
        assert expected in header
    assert "dnsbl" not in header and "greylist" not in header  # no registered methods
    verdict = stored.split("Authentication-Results: ", 1)[0]
    assert "dnsbl=pass policy.zone=bl.test" in verdict and "greylist=pass" in verdict

    why = server.cli_subprocess("why", RCPT, "Junk", str(junk_box[0]["uid"])).stdout
    assert "verdict: junk" in why and "SPF fail for junky.test" in why
    for line in ("spf       fail", "dkim      none", "dmarc     none", "dnsbl     pass"):
        assert line in why
    assert "greylist  pass       (retried after the delay)" in why
    record = json.loads(server.cli("why", RCPT, "INBOX", str(inbox[0]["uid"]), "--json").stdout)
    assert {c["method"]: c["result"] for c in record["checks"]}["dmarc"] == "pass"

    log = server.log_text()
    assert "checks.verdict" in log and "enforced=reject" in log and "greylist=defer" in log


def test_forwarded_mail_passing_dmarc_through_dkim_lands_in_inbox(server: PocztaServer) -> None:
    port = server.ports["smtp"]
    sender = "carol@fwd.test"  # v=spf1 -all and p=quarantine: only the signature can pass
    forwarded = message(sender, "forwarded", signed=True)
    assert attempt(port, OTHER, sender, forwarded)[0] == 451
    time.sleep(1.2)
    assert attempt(port, OTHER, sender, forwarded)[:2] == (250, 250)

    junk_box = json.loads(server.cli("mail", "list", RCPT, "--mailbox", "Junk", "--json").stdout)
    assert "forwarded" not in [m["subject"] for m in junk_box]
    uid = next(m["uid"] for m in server.messages(RCPT) if m["subject"] == "forwarded")
    why = server.cli("why", RCPT, "INBOX", str(uid)).stdout
    assert "verdict: accept (policy asked for accept)" in why
    override = "DMARC passed via aligned DKIM (d=fwd.test)"
    assert f"  spf: SPF fail for fwd.test ignored: {override} -> accept" in why
    spf_line = next(line for line in why.splitlines() if line.startswith("  spf "))
    assert spf_line.split()[1] == "fail" and spf_line.endswith(f"[ignored: {override}]")
    for line in ("dkim      pass", "dmarc     pass", "greylist  pass"):
        assert line in why


def test_submitted_mail_is_not_checked(server: PocztaServer) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = server.ports["submission"]
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(LISTED, 0)) as client:
        client.starttls(context=context)
        client.login("bob@example.test", PASSWORDS["bob@example.test"])
        client.sendmail("bob@example.test", [RCPT], message("bob@example.test", "from a user"))
    inbox = server.messages(RCPT)
    sent = next(m for m in inbox if m["subject"] == "from a user")
    stored = server.message_bytes(RCPT, sent["uid"])
    assert b"X-Poczta-Verdict" not in stored and b"Authentication-Results" not in stored
    assert server.cli("why", RCPT, "INBOX", str(sent["uid"]), check=False).returncode == 1
