"""DNS blocklists against in-memory zones: listings, refusals, IPv6, timeouts, concurrency."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import MxRecord, ZoneResolver
from poczta.mailauth.dnsbl import (
    DnsblKind,
    DnsblStatus,
    DnsblZone,
    ZoneResult,
    check_dnsbl,
    dnsbl_query_name,
    listed_results,
)

ZEN = DnsblZone("zen.example.net")
DBL = DnsblZone("dbl.example.net", kind=DnsblKind.DOMAIN, action="junk")


def run(
    resolver: ZoneResolver,
    zones: list[DnsblZone],
    ip: str | None = "192.0.2.99",
    domains: tuple[str, ...] = (),
) -> list[ZoneResult]:
    return asyncio.run(check_dnsbl(resolver, zones, client_ip=ip, domains=domains))


def test_query_names() -> None:
    assert dnsbl_query_name("192.0.2.99", ZEN) == "99.2.0.192.zen.example.net"
    v6 = dnsbl_query_name("2001:db8::1", ZEN)
    assert v6 == "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.zen.example.net"
    assert dnsbl_query_name("::ffff:192.0.2.1", ZEN) == "1.2.0.192.zen.example.net"
    assert dnsbl_query_name("[192.0.2.1]", ZEN) == "1.2.0.192.zen.example.net"
    assert dnsbl_query_name("not an ip", ZEN) is None
    assert dnsbl_query_name("fe80::1%eth0", ZEN) == dnsbl_query_name("fe80::1", ZEN)
    assert dnsbl_query_name("Spam.Example.COM.", DBL) == "spam.example.com.dbl.example.net"
    assert dnsbl_query_name("[192.0.2.1]", DBL) is None
    assert dnsbl_query_name("bad..name", DBL) is None
    assert dnsbl_query_name("bücher.example", DBL) == "xn--bcher-kva.example.dbl.example.net"
    assert dnsbl_query_name("2001:db8::1", DnsblZone("v4only.test", ipv6=False)) is None


def test_listed_with_reason_txt() -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.0.0.2")
    z.add("99.2.0.192.zen.example.net", "TXT", "Listed: see https://zen.example.net/q/192.0.2.99")
    [result] = run(z, [ZEN])
    assert result.status is DnsblStatus.LISTED and result.listed
    assert result.codes == ("127.0.0.2",)
    assert result.subject == "192.0.2.99"
    assert result.reason == "Listed: see https://zen.example.net/q/192.0.2.99"
    assert result.action == "reject"
    assert result.reply_text == (
        "Client host [192.0.2.99] blocked using zen.example.net; "
        "Listed: see https://zen.example.net/q/192.0.2.99"
    )
    assert listed_results([result]) == [result]


def test_not_listed() -> None:
    [result] = run(ZoneResolver(), [ZEN])
    assert result.status is DnsblStatus.PASS and not result.listed
    assert result.action is None
    assert result.query == "99.2.0.192.zen.example.net"


@pytest.mark.parametrize("code", ["127.255.255.254", "127.255.255.252", "127.255.255.255"])
def test_refused_code_is_never_a_listing(code: str) -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", code)
    [result] = run(z, [ZEN])
    assert result.status is DnsblStatus.PERMERROR
    assert not result.listed and result.action is None
    assert code in result.detail
    # not even when the zone's listed codes would include it
    wide = DnsblZone("zen.example.net", listed=("127.0.0.0/8",))
    assert run(z, [wide])[0].status is DnsblStatus.PERMERROR


def test_answer_outside_loopback_range_is_not_a_listing() -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "203.0.113.7")
    assert run(z, [ZEN])[0].status is DnsblStatus.PERMERROR


def test_refused_code_next_to_a_real_listing() -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.255.255.254", "127.0.0.4")
    [result] = run(z, [ZEN])
    assert result.listed and result.codes == ("127.0.0.4",)


def test_listed_codes_and_code_actions_per_zone() -> None:
    zone = DnsblZone(
        "zen.example.net",
        listed=("127.0.0.2", "127.0.0.4/31", "127.0.0.10/31"),
        code_actions=(("127.0.0.10/31", "junk"),),
    )
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.0.0.11")
    z.add("98.2.0.192.zen.example.net", "A", "127.0.0.3")
    z.add("97.2.0.192.zen.example.net", "A", "127.0.0.11", "127.0.0.2")
    assert run(z, [zone])[0].action == "junk"
    assert run(z, [zone], ip="192.0.2.98")[0].status is DnsblStatus.PASS
    assert run(z, [zone], ip="192.0.2.97")[0].action == "reject"


def test_ipv6_client_reversed_nibbles() -> None:
    z = ZoneResolver()
    name = dnsbl_query_name("2001:db8:0:1::25", ZEN)
    assert name is not None
    z.add(name, "A", "127.0.0.3")
    [result] = run(z, [ZEN], ip="2001:db8:0:1::25")
    assert result.listed and result.subject == "2001:db8:0:1::25"
    assert result.reason == ""


def test_timeout_is_temperror_not_listed() -> None:
    z = ZoneResolver()
    z.timeout.add("99.2.0.192.zen.example.net")
    [result] = run(z, [ZEN])
    assert result.status is DnsblStatus.TEMPERROR and not result.listed
    assert "DNS" in result.detail


def test_servfail_is_temperror() -> None:
    z = ZoneResolver()
    z.servfail.add("99.2.0.192.zen.example.net")
    assert run(z, [ZEN])[0].status is DnsblStatus.TEMPERROR


def test_txt_failure_keeps_the_listing() -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.0.0.2")
    z.timeout_rtypes.add(("99.2.0.192.zen.example.net", "TXT"))
    [result] = run(z, [ZEN])
    assert result.listed and result.reason == ""


def test_reason_is_cleaned_and_bounded() -> None:
    z = ZoneResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.0.0.2")
    z.add("99.2.0.192.zen.example.net", "TXT", "bad\r\nline", "x" * 500)
    [result] = run(z, [ZEN])
    assert "\r" not in result.reason and "\n" not in result.reason
    assert result.reason.startswith("bad line; xxx") and len(result.reason) <= 200


def test_domain_zone_checks_each_domain_once() -> None:
    z = ZoneResolver()
    z.add("spam.example.dbl.example.net", "A", "127.0.1.2")
    z.add("spam.example.dbl.example.net", "TXT", "spam domain")
    results = run(z, [DBL], domains=("good.example", "SPAM.example", "spam.example", "[1.2.3.4]"))
    [result] = results
    assert result.listed and result.subject == "spam.example" and result.action == "junk"
    assert result.asked == ("good.example", "spam.example")
    assert result.reply_text == "spam.example blocked using dbl.example.net; spam domain"
    asked = [q for q, t in z.queries if t == "A"]
    assert sorted(asked) == ["good.example.dbl.example.net", "spam.example.dbl.example.net"]


def test_domain_zone_temperror_unless_another_name_is_listed() -> None:
    z = ZoneResolver()
    z.timeout.add("slow.example.dbl.example.net")
    assert run(z, [DBL], domains=("slow.example", "ok.example"))[0].status is (
        DnsblStatus.TEMPERROR
    )
    z.add("bad.example.dbl.example.net", "A", "127.0.1.2")
    assert run(z, [DBL], domains=("slow.example", "bad.example"))[0].listed


def test_no_subjects_is_a_pass_without_queries() -> None:
    z = ZoneResolver()
    results = run(z, [ZEN, DBL], ip=None, domains=())
    assert [r.status for r in results] == [DnsblStatus.PASS, DnsblStatus.PASS]
    assert z.queries == []


class SlowResolver(ZoneResolver):
    """Counts how many A lookups are in flight at once."""

    inflight: int = 0
    peak: int = 0

    async def a(self, name: str) -> list[str]:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        await asyncio.sleep(0.01)
        self.inflight -= 1
        return await super().a(name)


def test_zones_are_asked_concurrently() -> None:
    z = SlowResolver()
    z.add("99.2.0.192.zen.example.net", "A", "127.0.0.2")
    zones = [ZEN, DnsblZone("bl.example.org"), DnsblZone("other.example.com"), DBL]
    results = run(z, zones, domains=("example.com",))
    assert z.peak == 4
    assert [r.zone.name for r in results] == [zone.name for zone in zones]
    assert [r.listed for r in results] == [True, False, False, False]


class BrokenResolver(ZoneResolver):
    async def a(self, name: str) -> list[str]:
        raise RuntimeError("resolver bug")

    async def mx(self, name: str) -> list[MxRecord]:  # pragma: no cover - never asked
        raise RuntimeError("resolver bug")


def test_a_broken_resolver_gives_temperror() -> None:
    [result] = run(BrokenResolver(), [ZEN])
    assert result.status is DnsblStatus.TEMPERROR and "internal error" in result.detail


def test_zone_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DnsblZone("zen.example.net", action="discard")
    with pytest.raises(ValueError):
        DnsblZone("")
    with pytest.raises(ValueError):
        DnsblZone("zen.example.net", listed=("not-a-network",))
    assert DnsblZone("ZEN.Example.NET.").name == "zen.example.net"
    assert DnsblZone("x.test", kind="domain").kind is DnsblKind.DOMAIN  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    ip=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.ip_addresses().map(str),
        st.tuples(st.ip_addresses(v=6), st.text(max_size=5)).map(lambda t: f"{t[0]}%{t[1]}"),
    ),
    domains=st.lists(st.text(max_size=80), max_size=4),
    answer=st.one_of(st.ip_addresses(v=4).map(str), st.text(max_size=20)),
)
def test_odd_inputs_never_raise(ip: str | None, domains: list[str], answer: str) -> None:
    z = ZoneResolver()
    for name in {dnsbl_query_name(ip or "", ZEN), *(dnsbl_query_name(d, DBL) for d in domains)}:
        if name is not None:
            z.add(name, "A", answer)
            z.add(name, "TXT", b"\xff\xfe binary \x00")
    results = run(z, [ZEN, DBL], ip=ip, domains=tuple(domains))
    assert len(results) == 2
    for result in results:
        assert result.status in DnsblStatus
        if result.listed:
            assert result.codes and result.action in ("reject", "junk")
            assert not result.codes[0].startswith("127.255.255.")
