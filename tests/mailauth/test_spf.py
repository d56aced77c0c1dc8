"""Unit tests for poczta.mailauth.spf: macros, limits, error mapping and edge cases."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import MxRecord, ZoneResolver
from poczta.mailauth.spf import SpfLimits, SpfResult, SpfResultCode, check_host, check_spf
from poczta.mailauth.spf_macros import (
    MacroValues,
    SpfSyntaxError,
    expand,
    parse_macro_string,
    truncate_domain,
)
from poczta.mailauth.spf_record import parse_record


def zone(records: dict[str, dict[str, list[Any]]]) -> ZoneResolver:
    return ZoneResolver.from_mapping(records)


def check(
    resolver: Any, ip: str = "192.0.2.3", domain: str = "example.com", **kw: Any
) -> SpfResult:
    sender = kw.pop("sender", f"user@{domain}")
    return asyncio.run(check_host(ip, domain, sender, resolver=resolver, **kw))


# --- macros (RFC 7208 7.4 examples) ---------------------------------------------


async def _no_ptr(domain: str) -> str:
    return "unknown"


def _values(ip: str) -> MacroValues:
    return MacroValues(
        sender="strong-bad@email.example.com",
        local_part="strong-bad",
        sender_domain="email.example.com",
        ip=ipaddress.ip_address(ip),
        helo="mx.example.org",
        receiver="",
        timestamp=1234,
        validated_name=_no_ptr,
    )


RFC_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%{h} %{t} %{r} %{c}", "mx.example.org 1234 unknown 192.0.2.3"),
    ("%%%_%-%{L}", "% %20strong-bad"),
]


@pytest.mark.parametrize(("macro", "expected"), RFC_EXAMPLES)
def test_rfc_macro_examples(macro: str, expected: str) -> None:
    parts = parse_macro_string(macro, explanation=True)
    assert asyncio.run(expand(parts, _values("192.0.2.3"), "email.example.com")) == expected


def test_ipv6_macro_and_url_escaping() -> None:
    parts = parse_macro_string("%{ir}.%{v}._spf.%{d2}")
    got = asyncio.run(expand(parts, _values("2001:db8::cb01"), "email.example.com"))
    want = "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    assert got.lower() == want
    values = MacroValues(
        "a b&c=d/é@x.org", "a b&c=d/é", "x.org", ipaddress.ip_address("::1"), "", "", 0, _no_ptr
    )
    escaped = asyncio.run(expand(parse_macro_string("%{L}"), values, "x.org"))
    assert escaped == "a%20b%26c%3Dd%2F%C3%A9"


@pytest.mark.parametrize(
    "bad", ["%", "%{", "%{x}", "%{d0}", "%{c}", "%{t}", "%{r}", "%z", "a b", "é", "%{d2rr}"]
)
def test_bad_macro_strings(bad: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_macro_string(bad)


def test_truncation_to_253() -> None:
    long = ".".join(["a" * 60] * 5) + ".example.com"
    assert len(truncate_domain(long)) <= 253
    assert truncate_domain(long).endswith(".example.com")


# --- record syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 a:foo",  # no top label
        "v=spf1 a:foo.123",  # numeric top label
        "v=spf1 ip4:192.0.2.1/33",
        "v=spf1 ip4:192.0.2.01",
        "v=spf1 ip6:::1/129",
        "v=spf1 ip6:fe80::1%eth0",
        "v=spf1 ip4:2001:db8::1",
        "v=spf1 a/024",
        "v=spf1 redirect=a.example redirect=b.example",
        "v=spf1 exp=a.example exp=b.example",
        "v=spf1 include",
        "v=spf1 all:foo.example",
        "v=spf1 -redirect=x.example",
        "v=spf1 foo",
        "v=spf1 a:example.com\tmx",
        "v=spf1 moo=%{",
    ],
)
def test_syntax_errors(record: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_record(record)
    result = check(zone({"example.com": {"TXT": [record]}}))
    assert result.result == "permerror" and result.problem


def test_valid_terms_parse() -> None:
    record = parse_record(
        "v=spf1  +a -mx:%{d}/24//64 ~ptr ?ip4:192.0.2.0/24 ip6:2001:DB8::/32 "
        "exists:%{i}.x.example include:_spf.example.com moo.cow-2_3=%{d} exp=e.%{d} "
    )
    names = [(m.qualifier, m.name) for m in record.mechanisms]
    assert names == [
        ("+", "a"),
        ("-", "mx"),
        ("~", "ptr"),
        ("?", "ip4"),
        ("+", "ip6"),
        ("+", "exists"),
        ("+", "include"),
    ]
    assert record.mechanisms[1].cidr4 == 24 and record.mechanisms[1].cidr6 == 64
    assert record.explanation is not None and record.redirect is None


# --- evaluation ---------------------------------------------------------------------


def test_typical_record_passes_and_reports_mechanism() -> None:
    resolver = zone(
        {
            "example.com": {"TXT": ["v=spf1 ip4:198.51.100.0/24 include:_spf.example.net -all"]},
            "_spf.example.net": {"TXT": ["v=spf1 ip4:192.0.2.0/25 ip6:2001:db8::/32 -all"]},
        }
    )
    result = check(resolver)
    assert result.result == "pass"
    assert result.mechanism == "include:_spf.example.net"
    assert result.dns_lookups == 1
    failed = check(resolver, ip="203.0.113.1")
    assert failed.result == "fail" and failed.mechanism == "-all"
    assert failed.explanation == "203.0.113.1 is not allowed to send mail for example.com"
    assert check(resolver, ip="2001:db8::5").result == "pass"
    assert check(resolver, ip="::ffff:192.0.2.3").result == "pass"  # IPv4-mapped client


def test_exp_only_on_fail_and_ignored_when_ambiguous() -> None:
    resolver = zone(
        {
            "example.com": {"TXT": ["v=spf1 ?ip4:192.0.2.3 -all exp=why.example.com"]},
            "why.example.com": {"TXT": ["%{i} may not send for %{d}"]},
            "two.example.com": {"TXT": ["v=spf1 -all exp=twice.example.com"]},
            "twice.example.com": {"TXT": ["one", "two"]},
        }
    )
    assert check(resolver).explanation is None
    assert check(resolver, ip="192.0.2.4").explanation == "192.0.2.4 may not send for example.com"
    result = check(resolver, domain="two.example.com", default_explanation="nope")
    assert result.explanation == "nope"


def test_lookup_limit() -> None:
    records: dict[str, dict[str, list[Any]]] = {
        "example.com": {"TXT": ["v=spf1 " + " ".join(f"a:h{i}.example.com" for i in range(11))]}
    }
    records.update({f"h{i}.example.com": {"A": ["198.51.100.1"]} for i in range(11)})
    resolver = zone(records)
    result = check(resolver)
    assert result.result == "permerror" and "10 DNS lookups" in str(result.problem)
    assert check(resolver, ip="198.51.100.1").result == "pass"  # matched at the first
    assert check(resolver, limits=SpfLimits(dns_lookups=20)).result == "neutral"


def test_void_lookup_limit() -> None:
    resolver = zone(
        {
            "example.com": {
                "TXT": ["v=spf1 a:x1.example.com mx:x2.example.com exists:x3.example.com ~all"]
            }
        }
    )
    result = check(resolver)
    assert result.result == "permerror" and result.void_lookups == 3
    assert check(resolver, limits=SpfLimits(void_lookups=3)).result == "softfail"


def test_mx_limit_counts_address_lookups() -> None:
    records: dict[str, dict[str, list[Any]]] = {
        "example.com": {
            "TXT": ["v=spf1 mx -all"],
            "MX": [(i, f"mx{i}.example.com") for i in range(11)] + [(99, ".")],
        }
    }
    records.update({f"mx{i}.example.com": {"A": [f"198.51.100.{i}"]} for i in range(11)})
    resolver = zone(records)
    assert check(resolver, ip="198.51.100.9").result == "pass"
    assert check(resolver, ip="198.51.100.10").result == "permerror"


def test_temp_and_perm_errors() -> None:
    resolver = zone(
        {
            "example.com": {"TXT": ["v=spf1 a:down.example.com -all"]},
            "inc.example.com": {"TXT": ["v=spf1 include:nothing.example.com -all"]},
            "redir.example.com": {"TXT": ["v=spf1 redirect=nothing.example.com"]},
            "two.example.com": {"TXT": ["v=spf1 -all", "v=spf1 +all", "other"]},
            "ptr.example.com": {"TXT": ["v=spf1 ptr -all"]},
        }
    )
    resolver.servfail.add("down.example.com")
    resolver.timeout.add("3.2.0.192.in-addr.arpa")
    assert check(resolver).result == "temperror"
    assert check(resolver, domain="inc.example.com").result == "permerror"
    assert check(resolver, domain="redir.example.com").result == "permerror"
    assert check(resolver, domain="two.example.com").result == "permerror"
    assert check(resolver, domain="ptr.example.com").result == "fail"  # PTR error: no match
    assert check(resolver, domain="none.example.com").result == "none"
    assert check(resolver, domain="localhost").result == "none"
    assert check(resolver, ip="not-an-ip").result == "permerror"


def test_ptr_and_p_macro() -> None:
    resolver = zone(
        {
            "example.com": {"TXT": ["v=spf1 ptr -all exp=e.example.com"], "A": ["192.0.2.3"]},
            "e.example.com": {"TXT": ["%{p} / %{p2}"]},
            "3.2.0.192.in-addr.arpa": {"PTR": ["other.example.net", "mail.example.com"]},
            "4.2.0.192.in-addr.arpa": {"PTR": ["mail.example.com"]},
            "mail.example.com": {"A": ["192.0.2.3"]},
            "other.example.net": {"A": ["192.0.2.3"]},
        }
    )
    assert check(resolver).result == "pass"
    failed = check(resolver, ip="192.0.2.4")  # PTR name does not point back
    assert failed.result == "fail" and failed.explanation == "unknown / unknown"


def test_check_spf_identities() -> None:
    resolver = zone(
        {
            "example.com": {"TXT": ["v=spf1 -all"]},
            "mx.example.org": {"TXT": ["v=spf1 a -all"], "A": ["192.0.2.3"]},
        }
    )
    mail_from = asyncio.run(
        check_spf("192.0.2.3", "<user@example.com>", "mx.example.org", resolver)
    )
    assert (mail_from.result, mail_from.identity, mail_from.domain) == (
        "fail",
        "mailfrom",
        "example.com",
    )
    helo = asyncio.run(check_spf("192.0.2.3", "", "mx.example.org", resolver))
    assert (helo.result, helo.identity, helo.sender) == (
        "pass",
        "helo",
        "postmaster@mx.example.org",
    )
    assert asyncio.run(check_spf("192.0.2.3", "<>", "[192.0.2.3]", resolver)).result == "none"


class BrokenResolver(ZoneResolver):
    async def a(self, name: str) -> list[str]:
        raise RuntimeError("boom")


def test_resolver_breaking_contract_is_temperror() -> None:
    resolver = BrokenResolver.from_mapping({"example.com": {"TXT": ["v=spf1 a -all"]}})
    result = check(resolver)
    assert result.result == SpfResultCode.TEMPERROR and "internal error" in str(result.problem)


def test_mx_record_type_is_used() -> None:
    resolver = zone({"example.com": {"TXT": ["v=spf1 mx/24 -all"], "MX": [(5, "mx.example.com")]}})
    resolver.add("mx.example.com", "A", "192.0.2.200")
    assert check(resolver).result == "pass"
    assert asyncio.run(resolver.mx("example.com")) == [MxRecord(5, "mx.example.com")]


# --- robustness -----------------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        " ",
        "v=spf1",
        "a",
        "mx",
        "ptr",
        "all",
        "include:",
        "exists:",
        "ip4:",
        "ip6:",
        "redirect=",
        "exp=",
        "-",
        "+",
        "~",
        "?",
        ":",
        "/",
        "//",
        "%{",
        "}",
        "%",
        "d",
        "i",
        "p",
        "l",
        "r",
        "1",
        "24",
        "128",
        "192.0.2.1",
        "::1",
        "example.com",
        ".",
        "=",
        "_",
        "\t",
        "é",
        "\x00",
    ]
)
_RECORDS = st.one_of(
    st.text(max_size=80),
    st.lists(_TOKENS, max_size=30).map(lambda parts: "v=spf1 " + "".join(parts)),
)


@settings(max_examples=400, deadline=None)
@given(_RECORDS)
def test_arbitrary_records_never_raise(text: str) -> None:
    with contextlib.suppress(SpfSyntaxError):
        parse_record(text)  # a syntax error is the only exception allowed
    resolver = zone(
        {
            "example.com": {"TXT": [text.encode("utf-8", "surrogatepass")]},
            "1.2.0.192.in-addr.arpa": {"PTR": ["example.com"]},
        }
    )
    resolver.add("example.com", "A", "192.0.2.1")
    result = check(resolver, ip="192.0.2.1")
    assert isinstance(result.result, SpfResultCode)
    assert "internal error" not in str(result.problem)
