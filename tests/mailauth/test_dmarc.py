"""DMARC discovery, alignment, results and dispositions against in-memory DNS zones."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import ZoneResolver
from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import (
    DmarcRecordError,
    DmarcResult,
    SpfOutcome,
    aligned,
    check_dmarc,
    organizational_domain,
    parse_dmarc_record,
)

FROM = ["Alice <alice@mail.example.com>"]


def zone(**records: str) -> ZoneResolver:
    z = ZoneResolver()
    for name, value in records.items():
        z.add(name.replace("__", "_dmarc.").replace("_", "."), "TXT", value)
    return z


def zone_at(name: str, *values: str) -> ZoneResolver:
    z = ZoneResolver()
    z.add(name, "TXT", *values)
    return z


def dkim(domain: str, status: DkimStatus = DkimStatus.PASS, limited: bool = False) -> DkimResult:
    return DkimResult(status, domain=domain, selector="s", body_length_limited=limited)


def run(
    resolver: ZoneResolver,
    spf: tuple[str, str] | None = ("fail", "bounce.other.test"),
    sigs: list[DkimResult] | None = None,
    from_header: list[str] | bytes = FROM,
    **kwargs: object,
) -> DmarcResult:
    return asyncio.run(check_dmarc(from_header, spf, sigs or [], resolver, **kwargs))  # type: ignore[arg-type]


REJECT = zone_at("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:d@example.com")


def test_org_domain_and_alignment() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("co.uk") == "co.uk"
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert aligned("EXAMPLE.com.", "example.com", "s")
    assert not aligned("example.org", "example.com", "r")
    assert not aligned("", "example.com", "r")


def test_no_record_is_none() -> None:
    result = run(ZoneResolver())
    assert (result.result, result.disposition) == ("none", "none")
    assert (result.from_domain, result.org_domain) == ("mail.example.com", "example.com")


def test_record_found_at_org_domain_uses_sp() -> None:
    resolver = zone_at("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    result = run(resolver)
    assert (result.result, result.policy, result.disposition) == (
        "fail",
        "quarantine",
        "quarantine",
    )
    assert ("_dmarc.mail.example.com", "TXT") in resolver.queries


def test_record_at_from_domain_uses_p() -> None:
    resolver = zone_at("_dmarc.mail.example.com", "v=DMARC1; p=reject; sp=none")
    assert run(resolver).disposition == "reject"


@pytest.mark.parametrize(("spf", "sigs", "expected"), [
    (("pass", "example.com"), [], "pass"),
    (("pass", "bounce.mail.example.com"), [], "pass"),
    (("pass", "example.org"), [], "fail"),
    (("softfail", "example.com"), [], "fail"),
    (None, [dkim("example.com")], "pass"),
    (None, [dkim("example.org"), dkim("mail.example.com")], "pass"),
    (None, [dkim("example.com", DkimStatus.FAIL)], "fail"),
    (None, [dkim("example.com", limited=True)], "fail"),
    (("temperror", "example.com"), [], "temperror"),
    (None, [dkim("example.com", DkimStatus.TEMPERROR)], "temperror"),
    (None, [dkim("example.org", DkimStatus.TEMPERROR)], "fail"),
])  # fmt: skip
def test_relaxed_alignment(
    spf: tuple[str, str] | None, sigs: list[DkimResult], expected: str
) -> None:
    result = run(REJECT, spf=spf, sigs=sigs)
    assert result.result == expected, result.reason
    assert result.disposition == ("reject" if expected == "fail" else "none")


def test_body_length_limited_can_be_accepted() -> None:
    sigs = [dkim("example.com", limited=True)]
    assert run(REJECT, sigs=sigs, accept_body_length_limited=True).result == "pass"


def test_strict_alignment() -> None:
    resolver = zone_at("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s; aspf=s")
    assert run(resolver, spf=("pass", "example.com")).result == "fail"
    assert run(resolver, sigs=[dkim("example.com")]).result == "fail"
    strict_from = ["a@example.com"]
    assert run(resolver, spf=("pass", "example.com"), from_header=strict_from).result == "pass"
    passed = run(resolver, sigs=[dkim("example.com")], from_header=strict_from)
    assert passed.dkim_aligned and not passed.spf_aligned


def test_spf_outcome_object_is_accepted() -> None:
    assert run(REJECT, spf=SpfOutcome("pass", "example.com")).result == "pass"  # type: ignore[arg-type]


@pytest.mark.parametrize(("roll", "policy", "disposition"), [
    (0.10, "reject", "reject"), (0.30, "reject", "quarantine"),
    (0.10, "quarantine", "quarantine"), (0.30, "quarantine", "none"),
])  # fmt: skip
def test_pct_sampling(roll: float, policy: str, disposition: str) -> None:
    resolver = zone_at("_dmarc.example.com", f"v=DMARC1; p={policy}; pct=20")
    assert run(resolver, rng=lambda: roll).disposition == disposition


def test_dns_failures_are_temperror() -> None:
    resolver = ZoneResolver(servfail={"_dmarc.mail.example.com"})
    assert run(resolver).result == "temperror"
    resolver = ZoneResolver(timeout={"_dmarc.example.com"})
    assert run(resolver).result == "temperror"


def test_several_or_foreign_records() -> None:
    two = zone_at("_dmarc.example.com", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    assert run(two).result == "none"
    foreign = zone_at("_dmarc.example.com", "v=spf1 -all", "v=DMARC1; p=quarantine")
    assert run(foreign).disposition == "quarantine"


def test_invalid_record_is_permerror_without_policy() -> None:
    result = run(zone_at("_dmarc.example.com", "v=DMARC1; p=bogus"))
    assert (result.result, result.disposition) == ("permerror", "none")


@pytest.mark.parametrize("values", [
    [], ["a@example.com", "b@example.com"], ["a@example.com, b@example.org"],
    ["undisclosed"], ["a@example..com"], ["<>"],
])  # fmt: skip
def test_unusable_from_is_permerror_reject(values: list[str]) -> None:
    result = run(REJECT, from_header=values)
    assert (result.result, result.disposition) == ("permerror", "reject")


def test_from_taken_from_message_bytes() -> None:
    message = b"Subject: x\r\nFrom: Alice\r\n <alice@Example.COM>\r\n\r\nbody\r\n"
    result = run(REJECT, spf=("pass", "example.com"), from_header=message)
    assert (result.result, result.from_domain) == ("pass", "example.com")
    doubled = b"From: a@example.com\r\nFrom: b@example.com\r\n\r\n"
    assert run(REJECT, from_header=doubled).result == "permerror"


def test_idn_from_domain() -> None:
    resolver = zone_at("_dmarc.xn--bcher-kva.example", "v=DMARC1; p=reject")
    assert run(resolver, from_header=["a@bücher.example"]).result == "fail"


def test_record_parsing() -> None:
    record = parse_dmarc_record(
        "v=DMARC1; p=quarantine; sp=reject; pct=50; adkim=s; aspf=r; fo=1;"
        " rua=mailto:a@example.com!10m,mailto:b@example.com; ruf=mailto:f@example.com"
    )
    assert (record.policy, record.subdomain_policy, record.pct) == ("quarantine", "reject", 50)
    assert (record.adkim, record.aspf, record.fo) == ("s", "r", "1")
    assert record.rua == ("mailto:a@example.com!10m", "mailto:b@example.com")
    assert record.ruf == ("mailto:f@example.com",)
    lenient = parse_dmarc_record("v=DMARC1;p=none;pct=500;adkim=x;sp=maybe")
    assert (lenient.pct, lenient.adkim, lenient.subdomain_policy) == (100, "r", None)
    assert parse_dmarc_record("v=DMARC1; p=nope; rua=mailto:a@example.com").policy == "none"
    for bad in ("p=reject; v=DMARC1", "v=DMARC2; p=none", "v=DMARC1; rua=junk", ""):
        with pytest.raises(DmarcRecordError):
            parse_dmarc_record(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.text(max_size=80), max_size=3))
def test_garbage_never_raises(record: str, froms: list[str]) -> None:
    resolver = zone_at("_dmarc.example.com", record)
    result = run(resolver, from_header=froms or FROM, sigs=[dkim("example.com")])
    assert result.result in {"pass", "fail", "none", "temperror", "permerror"}
    assert result.disposition in {"none", "quarantine", "reject"}
