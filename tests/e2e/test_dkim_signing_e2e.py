"""Submitted mail is DKIM-signed with the domain's keys, which the CLI creates and retires."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import stat
from collections.abc import Iterator

import dkim
import pytest

from poczta.dns import ZoneResolver
from poczta.mailauth.dkim import DkimStatus, verify_dkim
from poczta.message.header import split_header
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"
BARE = (
    "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: signed\r\n"
    "\r\nNo Date and no Message-ID: the server adds both, then signs.\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    srv = make_server(tmp_path_factory.mktemp("dkim"))
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def _submit(srv: PocztaServer, message: str) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", srv.ports["submissions"], timeout=10, context=client_tls()
    ) as client:
        client.login(ALICE, PASSWORDS[ALICE])
        client.sendmail(ALICE, [BOB], message.encode())


def _newest(srv: PocztaServer) -> bytes:
    uid = max(m["uid"] for m in srv.messages(BOB))
    return srv.message_bytes(BOB, uid)


def _zone(srv: PocztaServer) -> ZoneResolver:
    keys = json.loads(srv.cli("dkim", "list", "--json").stdout)
    zone = ZoneResolver()
    for key in keys:
        zone.add(f"{key['selector']}._domainkey.{key['domain']}", "TXT", key["record"])
    return zone


def _signatures(message: bytes) -> list[str]:
    """Every DKIM-Signature field of `message`, unfolded."""
    return [" ".join(f.text().split()) for f in split_header(message).named("dkim-signature")]


def test_generated_keys_are_private_and_their_records_are_printed(server: PocztaServer) -> None:
    generate = ("dkim", "generate", "example.test", "--selector", "mail2026")
    out = server.cli_subprocess(*generate).stdout  # the executable, once
    assert "mail2026._domainkey.example.test. 3600 IN TXT" in out
    assert '"v=DKIM1; k=rsa; p=' in out
    strings = re.findall(r'"([^"]*)"', out.splitlines()[-1])
    assert len(strings) > 1 and all(len(part) <= 255 for part in strings)  # a 2048-bit key
    server.cli("dkim", "generate", "example.test", "-s", "ed2026", "-a", "ed25519")
    again = server.cli("dkim", "generate", "example.test", "-s", "ed2026", check=False)
    assert again.returncode == 1 and "already" in again.stderr
    unknown = server.cli("dkim", "generate", "nowhere.test", check=False)
    assert unknown.returncode == 1 and "no domain nowhere.test" in unknown.stderr
    pem = server.root / "data" / "dkim" / "example.test" / "mail2026.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    listed = {
        k["selector"]: k["state"] for k in json.loads(server.cli("dkim", "list", "--json").stdout)
    }
    assert listed == {"mail2026": "signing", "ed2026": "signing"}
    record = server.cli("dkim", "record", "example.test", "ed2026").stdout
    assert record.startswith('ed2026._domainkey.example.test. 3600 IN TXT "v=DKIM1; k=ed25519; p=')


def test_submitted_mail_is_completed_and_signed_with_both_keys(server: PocztaServer) -> None:
    _submit(server, BARE)
    message = _newest(server)
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nDate: " in head and "\r\nMessage-ID: <" in head
    signatures = _signatures(message)
    assert [s for s in signatures if "a=rsa-sha256" in s]
    assert [s for s in signatures if "a=ed25519-sha256" in s]
    zone = _zone(server)
    results = asyncio.run(verify_dkim(message, zone))
    assert [(r.status, r.domain) for r in results] == [(DkimStatus.PASS, "example.test")] * 2

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        [txt] = zone.records[name.decode().rstrip(".").lower()]["TXT"]
        return str(txt).encode()

    # An independent verifier: dkimpy, on the RSA signature (the topmost one)
    assert dkim.verify(message, dnsfunc=dnsfunc)


def test_a_retired_key_stops_signing_without_a_restart(server: PocztaServer) -> None:
    out = server.cli("dkim", "retire", "example.test", "mail2026").stdout
    assert "retired mail2026 of example.test" in out
    _submit(server, BARE)
    signatures = _signatures(_newest(server))
    assert len(signatures) == 1 and "a=ed25519-sha256" in signatures[0]
    assert "s=ed2026" in signatures[0]
    states = {
        k["selector"]: k["state"] for k in json.loads(server.cli("dkim", "list", "--json").stdout)
    }
    assert states == {"mail2026": "retired", "ed2026": "signing"}
    # the private key of the retired selector is kept
    assert (server.root / "data" / "dkim" / "example.test" / "mail2026.pem").exists()
