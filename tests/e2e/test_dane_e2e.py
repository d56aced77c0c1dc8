"""DANE end to end: `poczta serve` delivering to a poczta whose TLSA records are published
in DNSSEC-signed zones, validated by a real resolver.

unbound (tests/e2e/dnssec_server.py) validates zones signed with ldns: dane.test
publishes a DANE-EE 3 1 1 record of the receiver's certificate, ta.test a DANE-TA
2 1 1 record of the CA that issued it, wrong.test a record of another key, bogus.test
a record changed after signing, plain.test (not signed) the wrong record too. Every MX
is the same receiving poczta on 127.0.0.2, with a certificate (and its CA) naming each.

CNAMEs (RFC 7672 2.2.2): alias.test's MX host is an alias, through signed zones, of
mail.target.test, whose DANE-TA record is the one that counts; the certificate names
mail.target.test but not the MX host. relay.test's MX host reaches the same target
through an unsigned zone, so only the MX host name's own (wrong) record is looked at.

`poczta dns dane.test --check` on the receiver (hostname mx.dane.test) finds its
certificate's record at _25._tcp.mx.dane.test, secure by the same resolver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.certificates import TestCa, self_signed, tlsa_record
from tests.e2e.dnssec_server import TestZone, unbound_server
from tests.e2e.harness import PocztaServer, make_server
from tests.e2e.test_outbound_e2e import WAIT, _dns, _outbound, arrived, submit

pytestmark = pytest.mark.e2e

RECEIVER = "127.0.0.2"
DOMAINS = ("dane.test", "ta.test", "wrong.test", "bogus.test", "plain.test")
ALIASED = ("alias.test", "relay.test")
TARGET = "mail.target.test"


@dataclass
class Servers:
    receiver: PocztaServer
    sender: PocztaServer


def _zone(
    domain: str, port: int, tlsa: str, extra: Sequence[str] = (), **options: object
) -> TestZone:
    records = ["@ IN MX 10 mx", f"mx IN A {RECEIVER}", f"_{port}._tcp.mx IN TLSA {tlsa}", *extra]
    return TestZone(domain, records, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("dane")
    (root / "rx").mkdir()
    (root / "tx").mkdir()
    receiver = make_server(
        root / "rx",
        services=("smtp",),
        host=RECEIVER,
        hostname="mx.dane.test",
        domains=DOMAINS + ALIASED,
    )
    for domain in DOMAINS + ALIASED:
        receiver.cli("user", "add", f"bob@{domain}", "--password-stdin", stdin="bob-secret-77\n")
    ca = TestCa()
    issued = ca.issue(*(f"mx.{d}" for d in DOMAINS), TARGET)
    tls = receiver.root / "data" / "tls"
    issued.write(tls / "cert.pem", tls / "key.pem")  # the leaf, then the CA
    sender = make_server(root / "tx", services=("smtp", "submissions"))
    port = receiver.ports["smtp"]
    ee = tlsa_record(issued.cert, 3).to_text()
    wrong = tlsa_record(self_signed("mx.wrong.test").cert, 3).to_text()
    altered = ee[:-4] + ("0000" if not ee.endswith("0000") else "1111")
    zones = [
        _zone("dane.test", port, ee, [f"_25._tcp.mx IN TLSA {ee}"]),  # for poczta dns
        _zone("ta.test", port, tlsa_record(ca.cert, 2).to_text()),
        _zone("wrong.test", port, wrong),
        _zone("bogus.test", port, ee, tamper={ee[8:]: altered[8:]}),
        _zone("plain.test", port, wrong, signed=False),
        *_aliased_zones(port, tlsa_record(ca.cert, 2).to_text(), wrong),
        TestZone("example.test", ['@ IN TXT "v=spf1 ip4:127.0.0.1 -all"'], signed=False),
    ]
    with unbound_server(root, zones) as dns:
        receiver.extra_config = _dns(dns) + "\n[checks]\ngreylisting = false\n"
        sender.extra_config = _dns(dns) + _outbound(port)
        for server in (receiver, sender):
            server.write_config()
            server.start()
        try:
            yield Servers(receiver, sender)
        finally:
            for server in (receiver, sender):
                if server.proc is not None:
                    server.stop()


def _aliased_zones(port: int, good: str, wrong: str) -> list[TestZone]:
    """alias.test and relay.test, their MX hosts aliases of mail.target.test."""
    target = ["mail IN A " + RECEIVER, f"_{port}._tcp.mail IN TLSA {good}"]
    return [
        TestZone("target.test", target),
        TestZone("alias.test", ["@ IN MX 10 mx", f"mx IN CNAME {TARGET}."]),
        TestZone(
            "relay.test",
            ["@ IN MX 10 mx", "mx IN CNAME hop.unsigned.test.", f"_{port}._tcp.mx IN TLSA {wrong}"],
        ),
        TestZone("unsigned.test", [f"hop IN CNAME {TARGET}."], signed=False),
    ]


def _attempt_lines(server: PocztaServer, domain: str) -> list[str]:
    return [
        line
        for line in server.log_text().splitlines()
        if "queue.attempt" in line and f"domain={domain}" in line
    ]


def _pending(server: PocztaServer, recipient: str) -> dict[str, object]:
    """`poczta queue show` of the recipient once an attempt left it pending."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for entry in json.loads(server.cli("queue", "list", "--json").stdout):
            if recipient in entry["recipients"] and entry["attempts"]:
                shown = json.loads(server.cli("queue", "show", str(entry["id"]), "--json").stdout)
                [found] = [r for r in shown["recipients"] if r["address"] == recipient]
                return dict(found)
        time.sleep(0.2)
    raise AssertionError(f"no attempt for {recipient}:\n{server.log_text()[-3000:]}")


def test_a_matching_dane_ee_record_delivers_over_authenticated_tls(servers: Servers) -> None:
    submit(servers.sender, "dane-ee", to="bob@dane.test")
    stored = arrived(servers.receiver, "bob@dane.test", "dane-ee").decode()
    assert "TLS" in stored.split("Received: ", 2)[1]
    [line] = _attempt_lines(servers.sender, "dane.test")
    assert 'tls="dane verified TLSv1.3' in line and "1 delivered" in line


def test_a_dane_ta_record_of_the_issuing_ca_delivers(servers: Servers) -> None:
    submit(servers.sender, "dane-ta", to="bob@ta.test")
    arrived(servers.receiver, "bob@ta.test", "dane-ta")
    [line] = _attempt_lines(servers.sender, "ta.test")
    assert 'tls="dane verified TLSv1.3' in line


def test_a_mismatching_record_defers(servers: Servers) -> None:
    submit(servers.sender, "dane-mismatch", to="bob@wrong.test")
    shown = _pending(servers.sender, "bob@wrong.test")
    assert shown["status"] == "pending" and shown["reply_enhanced"] == "4.7.5"
    reply = str(shown["last_reply"])
    assert reply.startswith("TLS handshake with mx.wrong.test failed: DANE authentication failed")
    assert f"_{servers.receiver.ports['smtp']}._tcp.mx.wrong.test" in reply
    assert servers.receiver.messages("bob@wrong.test") == []


def test_a_bogus_tlsa_answer_defers_without_connecting(servers: Servers) -> None:
    submit(servers.sender, "dane-bogus", to="bob@bogus.test")
    shown = _pending(servers.sender, "bob@bogus.test")
    assert shown["status"] == "pending" and shown["reply_enhanced"] == "4.7.5"
    reply = str(shown["last_reply"])
    assert reply.startswith("4.7.5 TLSA lookup of") and "DNSSEC validation failed" in reply
    assert servers.receiver.messages("bob@bogus.test") == []
    assert _attempt_lines(servers.sender, "bogus.test")[0].count("host=") == 1
    assert 'host=""' in _attempt_lines(servers.sender, "bogus.test")[0]


def test_an_unsigned_zone_gets_opportunistic_tls_whatever_its_records(servers: Servers) -> None:
    submit(servers.sender, "no dnssec", to="bob@plain.test")
    arrived(servers.receiver, "bob@plain.test", "no dnssec")
    [line] = _attempt_lines(servers.sender, "plain.test")
    assert 'tls="opportunistic TLSv1.3' in line


def test_an_mx_alias_through_signed_zones_uses_the_targets_records(servers: Servers) -> None:
    submit(servers.sender, "dane-cname", to="bob@alias.test")
    arrived(servers.receiver, "bob@alias.test", "dane-cname")
    [line] = _attempt_lines(servers.sender, "alias.test")
    assert 'tls="dane verified TLSv1.3' in line and "1 delivered" in line


def test_an_mx_alias_through_an_unsigned_zone_uses_the_mx_host_name_only(
    servers: Servers,
) -> None:
    submit(servers.sender, "dane-insecure-cname", to="bob@relay.test")
    shown = _pending(servers.sender, "bob@relay.test")
    assert shown["status"] == "pending" and shown["reply_enhanced"] == "4.7.5"
    reply = str(shown["last_reply"])
    assert "DANE authentication failed" in reply
    assert f"_{servers.receiver.ports['smtp']}._tcp.mx.relay.test" in reply
    assert servers.receiver.messages("bob@relay.test") == []


def test_the_dns_check_finds_the_receivers_tlsa_record_secure_and_matching(
    servers: Servers,
) -> None:
    result = servers.receiver.cli("dns", "dane.test", "--check", "--json", check=False)
    [dane] = [f for f in json.loads(result.stdout) if f["purpose"] == "DANE"]
    assert dane["name"] == "_25._tcp.mx.dane.test" and dane["state"] == "ok", dane
    assert dane["detail"] == "the certificate served on port 25 matches TLSA 3 1 1"
