"""`poczta dns DOMAIN --check` against a real DNS server (dnsmasq) serving right and wrong records.

good.test publishes exactly what `poczta dns good.test` prints (plus the host's A and
PTR): every record is OK and the exit status is 0. example.test gets a wrong SPF, a
DMARC record without a usable policy, a foreign ed25519 key and no MTA-STS: each is
named with what was found, and the exit status is 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poczta.mailauth.dkim_sign import generate_dkim_key
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PocztaServer, make_server

pytestmark = pytest.mark.e2e

HOST, HOST_IP = "mx.example.test", "127.0.0.1"


def published(server: PocztaServer, domain: str) -> dict[str, str]:
    """The TXT records `poczta dns DOMAIN` asks for, by name."""
    records = json.loads(server.cli("dns", domain, "--json").stdout)["records"]
    return {r["name"]: r["value"] for r in records if r["rtype"] == "TXT"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    root = Path(tmp_path_factory.mktemp("dns"))
    srv = make_server(root, services=("smtp",))
    srv.cli("domain", "add", "good.test")  # with its rsa key
    srv.cli("dkim", "generate", "example.test", "--selector", "main")
    srv.cli("dkim", "generate", "example.test", "--selector", "ed", "--algorithm", "ed25519")
    for domain in ("good.test", "example.test"):
        srv.cli("alias", "add", f"dmarc-reports@{domain}", "alice@example.test")
    srv.cli("alias", "add", "tls-reports@good.test", "alice@example.test")

    zone = published(srv, "good.test")
    mine = published(srv, "example.test")
    _, foreign_key = generate_dkim_key("ed25519-sha256")
    zone |= {
        "example.test": "v=spf1 ip4:192.0.2.1 -all",
        "main._domainkey.example.test": mine["main._domainkey.example.test"],
        "ed._domainkey.example.test": foreign_key,
        "_dmarc.example.test": "v=DMARC1; p=bogus",
        "_smtp._tls.example.test": mine["_smtp._tls.example.test"],
    }
    extra = [
        "--local=/127.in-addr.arpa/",
        f"--mx-host=good.test,{HOST},10",
        f"--mx-host=example.test,{HOST},10",
        f"--cname=mta-sts.good.test,{HOST}",
    ]
    # the host record gives its PTR too
    with dnsmasq_server(root, txt=zone, hosts={HOST: HOST_IP}, extra=extra) as port:
        srv.extra_config = f'[dns]\nnameservers = ["127.0.0.1"]\nport = {port}\ntimeout = 1.0\n'
        srv.write_config()
        yield srv


def check(server: PocztaServer, domain: str) -> tuple[int, list[dict[str, Any]]]:
    result = server.cli("dns", domain, "--check", "--json", check=False)
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def states(findings: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{f['purpose']} {f['name']}": f["state"] for f in findings}


def test_published_records_all_check_out(server: PocztaServer) -> None:
    code, findings = check(server, "good.test")
    assert code == 0, [f for f in findings if not f["ok"]]
    seen = states(findings)
    selector = next(k.split(" ")[1] for k in seen if k.startswith("DKIM "))
    assert seen == {
        "MX good.test": "ok",
        "SPF good.test": "ok",
        f"DKIM {selector} {selector}._domainkey.good.test": "ok",
        "DMARC _dmarc.good.test": "ok",
        "MTA-STS _mta-sts.good.test": "ok",
        "MTA-STS host mta-sts.good.test": "ok",
        "TLS-RPT _smtp._tls.good.test": "ok",
        f"host A/AAAA {HOST}": "ok",
        f"PTR {HOST_IP}": "ok",
        "report address dmarc-reports@good.test": "ok",
        "report address tls-reports@good.test": "ok",
        f"DANE _25._tcp.{HOST}": "optional",  # none published: dnsmasq signs nothing
    }
    spf = next(f for f in findings if f["purpose"] == "SPF")
    assert spf["found"] == ["v=spf1 mx -all"] and HOST_IP in spf["detail"]


def test_wrong_and_missing_records_are_named(server: PocztaServer) -> None:
    code, findings = check(server, "example.test")
    assert code == 1
    seen = states(findings)
    assert seen["MX example.test"] == "ok"
    assert seen["SPF example.test"] == "wrong"
    assert seen["DKIM main main._domainkey.example.test"] == "ok"
    assert seen["DKIM ed ed._domainkey.example.test"] == "wrong"
    assert seen["DMARC _dmarc.example.test"] == "wrong"
    assert seen["MTA-STS _mta-sts.example.test"] == "missing"
    assert seen["MTA-STS host mta-sts.example.test"] == "missing"
    assert seen["TLS-RPT _smtp._tls.example.test"] == "ok"
    assert seen["report address tls-reports@example.test"] == "missing"
    by_purpose = {f["purpose"]: f for f in findings}
    assert by_purpose["SPF"]["found"] == ["v=spf1 ip4:192.0.2.1 -all"]
    assert f"{HOST_IP} ({HOST}) gets fail" in by_purpose["SPF"]["detail"]
    assert by_purpose["DMARC"]["found"] == ["v=DMARC1; p=bogus"]


def test_check_in_words(server: PocztaServer) -> None:
    result = server.cli_subprocess("dns", "example.test", "--check", check=False)  # the executable
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("OK ") and "(MX example.test)" in line for line in lines)
    spf = next(line for line in lines if "(TXT example.test)" in line)
    assert spf.startswith("WRONG ") and "found: v=spf1 ip4:192.0.2.1 -all" in spf
    assert any(line.startswith("MISSING ") and "_mta-sts.example.test" in line for line in lines)


def test_zone_text_lists_every_record(server: PocztaServer) -> None:
    text = server.cli("dns", "example.test").stdout
    assert f"example.test. 3600 IN MX 10 {HOST}." in text
    assert 'example.test. 3600 IN TXT "v=spf1 mx -all"' in text
    assert "main._domainkey.example.test. 3600 IN TXT " in text
    assert "ed._domainkey.example.test. 3600 IN TXT " in text
    assert '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine;' in text
    assert "_mta-sts.example.test. 3600 IN TXT " in text
    assert '_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1;' in text
    assert ";   mode: testing" in text
    assert f"_25._tcp.{HOST}. 3600 IN TLSA 3 1 1 " in text
    assert all(len(line) <= 78 or not line.startswith(";") for line in text.splitlines())
    # Long TXT values go as strings of at most 255 characters.
    dkim_line = next(line for line in text.splitlines() if line.startswith("main._domainkey"))
    strings = dkim_line.split(" IN TXT ", 1)[1].split('" "')
    assert len(strings) >= 2 and all(len(s.strip('"')) <= 255 for s in strings)
