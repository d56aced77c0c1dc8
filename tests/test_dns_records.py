"""The records a domain publishes, and how each is judged, over an in-memory zone."""

from __future__ import annotations

import asyncio
from typing import Any

from poczta.dns import ZoneResolver, reverse_name
from poczta.dns_records import DkimPublication, DomainSetup, Finding, check, zone_text
from poczta.mailauth.dkim_sign import generate_dkim_key
from tests.certificates import self_signed, tlsa_record

_, KEY = generate_dkim_key("ed25519-sha256")
_, OTHER_KEY = generate_dkim_key("ed25519-sha256")
SERVED = self_signed("mx.example.org")
TLSA = tlsa_record(SERVED.cert, 3).to_text()
SETUP = DomainSetup(
    "example.org",
    "mx.example.org",
    (DkimPublication("ed", "ed25519", KEY),),
    ("192.0.2.10",),
    certificate=tuple(SERVED.chain()),
)


def good_zone() -> dict[str, dict[str, list[Any]]]:
    return {
        "example.org": {"MX": [(10, "mx.example.org")], "TXT": ["v=spf1 mx -all"]},
        "ed._domainkey.example.org": {"TXT": [KEY]},
        "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject"]},
        "_mta-sts.example.org": {"TXT": [f"v=STSv1; id={SETUP.mta_sts_id()}"]},
        "mta-sts.example.org": {"CNAME": ["mx.example.org"]},
        "_smtp._tls.example.org": {"TXT": ["v=TLSRPTv1; rua=mailto:tls@example.org"]},
        "mx.example.org": {"A": ["192.0.2.10"], "AAAA": []},
        reverse_name("192.0.2.10"): {"PTR": ["mx.example.org."]},
        "_25._tcp.mx.example.org": {"TLSA": [TLSA]},
    }


def judge(zone: dict[str, dict[str, list[Any]]], setup: DomainSetup = SETUP) -> dict[str, Finding]:
    resolver = ZoneResolver.from_mapping(zone)
    resolver.secure_zones.add("example.org")
    return {f.purpose: f for f in asyncio.run(check(setup, resolver))}


def test_a_right_zone_is_all_ok() -> None:
    findings = judge(good_zone())
    purposes = ["MX", "SPF", "DKIM ed", "DMARC", "MTA-STS", "MTA-STS host", "TLS-RPT"]
    purposes += ["host A/AAAA", "PTR", "DANE"]
    assert {p: f.state for p, f in findings.items()} == dict.fromkeys(purposes, "ok")
    assert findings["DMARC"].detail.startswith("p=reject")


def test_mx_elsewhere_or_null_is_wrong() -> None:
    zone = good_zone()
    zone["example.org"]["MX"] = [(0, ".")]
    finding = judge(zone)["MX"]
    assert (finding.state, finding.found) == ("wrong", ("0 .",))
    del zone["example.org"]["MX"]
    assert judge(zone)["MX"].state == "missing"


def test_spf_is_judged_by_its_result_for_the_host() -> None:
    zone = good_zone()
    zone["example.org"]["TXT"] = ["v=spf1 ip4:192.0.2.10 -all"]  # another spelling, same effect
    assert judge(zone)["SPF"].state == "ok"
    zone["example.org"]["TXT"] = ["v=spf1 a:elsewhere.example -all"]
    finding = judge(zone)["SPF"]
    assert finding.state == "wrong" and "192.0.2.10 (mx.example.org) gets" in finding.detail
    zone["example.org"]["TXT"] = ["v=spf1 mx -all", "v=spf1 -all"]
    assert "more than one" in judge(zone)["SPF"].detail
    zone["example.org"]["TXT"] = ["google-site-verification=x"]
    assert judge(zone)["SPF"].state == "missing"


def test_dkim_needs_our_key() -> None:
    zone = good_zone()
    zone["ed._domainkey.example.org"]["TXT"] = [OTHER_KEY]
    assert judge(zone)["DKIM ed"].state == "wrong"
    del zone["ed._domainkey.example.org"]
    assert judge(zone)["DKIM ed"].state == "missing"
    no_keys = DomainSetup("example.org", "mx.example.org")
    finding = judge(good_zone(), no_keys)["DKIM"]
    assert finding.state == "missing" and "poczta dkim generate example.org" in finding.detail


def test_dmarc_mta_sts_and_tls_rpt_must_parse() -> None:
    zone = good_zone()
    zone["_dmarc.example.org"]["TXT"] = ["v=DMARC1; p=maybe"]
    zone["_mta-sts.example.org"]["TXT"] = ["v=STSv1; id=not-alnum!"]
    zone["_smtp._tls.example.org"]["TXT"] = ["v=TLSRPTv1;"]
    findings = judge(zone)
    assert findings["DMARC"].state == "wrong"
    assert findings["MTA-STS"].state == "wrong"
    assert findings["TLS-RPT"].state == "wrong"


def test_an_old_mta_sts_id_is_ok_with_a_note() -> None:
    zone = good_zone()
    zone["_mta-sts.example.org"]["TXT"] = ["v=STSv1; id=20240101"]
    finding = judge(zone)["MTA-STS"]
    assert finding.state == "ok" and "differs" in finding.detail


def test_host_addresses_and_reverse_names() -> None:
    zone = good_zone()
    zone["mx.example.org"]["A"] = ["192.0.2.99"]
    zone[reverse_name("192.0.2.99")] = {"PTR": ["host99.provider.example"]}
    findings = judge(zone)
    assert findings["host A/AAAA"].state == "wrong"  # the configured 192.0.2.10 is absent
    assert findings["PTR"].state == "wrong"
    assert findings["PTR"].found == ("host99.provider.example",)


def test_dns_failures_are_errors_not_crashes() -> None:
    resolver = ZoneResolver.from_mapping(good_zone())
    resolver.servfail.add("_dmarc.example.org")
    resolver.timeout.add("mx.example.org")
    findings = {f.purpose: f for f in asyncio.run(check(SETUP, resolver))}
    assert findings["DMARC"].state == "error"
    assert findings["SPF"].state == "error"  # the host's addresses cannot be known
    assert findings["host A/AAAA"].state == "error"


def test_zone_text_has_every_record() -> None:
    text = zone_text(SETUP)
    for record in SETUP.records():
        assert f"{record.name}. 3600 IN {record.rtype} " in text
    assert "mx.example.org. 3600 IN A 192.0.2.10" in text
    assert f'"v=STSv1; id={SETUP.mta_sts_id()}"' in text
    assert ";   mx: mx.example.org" in text


def test_the_tlsa_record_suggested_is_3_1_1_of_the_certificate_served() -> None:
    [dane] = [r for r in SETUP.records() if r.rtype == "TLSA"]
    assert (dane.name, dane.value) == ("_25._tcp.mx.example.org", TLSA)
    assert TLSA.startswith("3 1 1 ") and len(TLSA) == len("3 1 1 ") + 64
    text = zone_text(SETUP)
    assert f"_25._tcp.mx.example.org. 3600 IN TLSA {TLSA}\n" in text
    comment = " ".join(line[2:].strip() for line in text.splitlines() if line.startswith(";"))
    assert "only helps once the zone of the MX host is DNSSEC-signed" in comment
    assert "publish the new key's record beside this one" in comment


def test_without_a_readable_certificate_no_tlsa_record_is_suggested() -> None:
    setup = DomainSetup("example.org", "mx.example.org", certificate_problem="cannot read it")
    assert all(r.rtype != "TLSA" for r in setup.records())
    assert "; no TLSA record: cannot read it" in zone_text(setup)
    finding = judge(good_zone(), setup)["DANE"]
    assert finding.state == "error" and "cannot read it" in finding.detail


def test_no_tlsa_record_is_optional_and_the_check_still_passes() -> None:
    zone = good_zone()
    del zone["_25._tcp.mx.example.org"]
    finding = judge(zone)["DANE"]
    assert finding.state == "optional" and finding.ok
    assert f"publish _25._tcp.mx.example.org. IN TLSA {TLSA}" in finding.detail
