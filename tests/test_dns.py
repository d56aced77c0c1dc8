"""Tests for poczta.dns: the in-memory zone, the cache, and the dnspython resolver
against real DNS servers on loopback (dnsmasq; unbound validating signed zones)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poczta.app import build_resolver
from poczta.config import ConfigError, validate_text
from poczta.dns import (
    _NX,
    AnswerTrail,
    DerivedCache,
    DnsCache,
    DnsPythonResolver,
    DnssecBogus,
    DnsTempError,
    DnsTimeout,
    MxRecord,
    NXDomain,
    ServFail,
    TlsaRecord,
    Validated,
    ZoneResolver,
    trusts_ad,
)
from tests.e2e.dnssec_server import TestZone, unbound_server
from tests.e2e.harness import free_port

# --- ZoneResolver ----------------------------------------------------------------


def test_zone_answers_and_failures() -> None:
    zone = ZoneResolver.from_mapping(
        {
            "example.test": {"TXT": ["v=spf1 -all", ["v=spf1 ", "a"]], "MX": [(10, "mx.test.")]},
            "alias.example.test": {"CNAME": ["example.test."]},
            "slow.test": {"A": ["192.0.2.1"], "TXT": ["x"]},
            "4.3.2.1.in-addr.arpa": {"PTR": ["host.example.test."]},
        }
    )
    zone.timeout.add("down.test")
    zone.servfail.add("broken.test")
    zone.timeout_rtypes.add(("slow.test", "TXT"))

    async def run() -> None:
        assert await zone.txt("EXAMPLE.test.") == [b"v=spf1 -all", b"v=spf1 a"]
        assert await zone.txt("alias.example.test") == [b"v=spf1 -all", b"v=spf1 a"]
        assert await zone.mx("example.test") == [MxRecord(10, "mx.test")]
        assert await zone.a("example.test") == []
        assert await zone.ptr("1.2.3.4") == ["host.example.test"]
        assert await zone.a("slow.test") == ["192.0.2.1"]
        with pytest.raises(DnsTimeout):
            await zone.txt("slow.test")
        with pytest.raises(NXDomain):
            await zone.a("nowhere.test")
        with pytest.raises(DnsTimeout):
            await zone.a("down.test")
        with pytest.raises(ServFail):
            await zone.a("broken.test")

    asyncio.run(run())


def test_zone_cname_loop_is_servfail() -> None:
    zone = ZoneResolver.from_mapping(
        {"a.test": {"CNAME": ["b.test"]}, "b.test": {"CNAME": ["a.test"]}}
    )
    with pytest.raises(ServFail):
        asyncio.run(zone.a("a.test"))


# --- DnsCache --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_ttl_caps_and_bound() -> None:
    clock = FakeClock()
    cache = DnsCache(2, max_ttl=60, max_negative_ttl=5, clock=clock)
    cache.put(("a", "A"), ["192.0.2.1"], 3600, negative=False)
    cache.put(("n", "A"), [], 3600, negative=True)
    cache.put(("z", "A"), ["192.0.2.9"], 0, negative=False)  # TTL 0: not kept
    assert cache.get(("a", "A")) == ["192.0.2.1"]
    assert cache.get(("n", "A")) == []
    assert cache.get(("z", "A")) is None
    clock.now += 6
    assert cache.get(("n", "A")) is None  # negative TTL capped at 5
    assert cache.get(("a", "A")) == ["192.0.2.1"]
    clock.now += 60
    assert cache.get(("a", "A")) is None  # positive TTL capped at 60
    for name in ("x", "y", "w"):
        cache.put((name, "A"), [name], 30, negative=False)
    assert len(cache) == 2 and cache.get(("x", "A")) is None  # least recently used went


# --- DerivedCache -----------------------------------------------------------------


def _cached_resolver(clock: FakeClock) -> DnsPythonResolver:
    """A resolver whose only answers are the ones put in its cache: nothing listens on
    its server port, so a question it has not cached fails as a temporary error."""
    resolver = DnsPythonResolver(
        ["127.0.0.1"], port=free_port(), timeout=0.2, lifetime=0.5,
        cache=DnsCache(clock=clock),
    )  # fmt: skip
    resolver.cache.put(("a.test", "TXT"), [b"v=spf1 -all"], 300, negative=False)
    return resolver


def _derive(resolver: DnsPythonResolver, *names: str) -> tuple[AnswerTrail, list[str]]:
    """Ask TXT for each name through a trail; what was found (or NXDOMAIN) per name."""
    trail = resolver.tracking()

    async def ask() -> list[str]:
        out = []
        for name in names:
            try:
                out.append(repr(await trail.txt(name)))
            except NXDomain:
                out.append("nxdomain")
        return out

    return trail, asyncio.run(ask())


def test_derived_value_lives_as_long_as_every_answer_it_used() -> None:
    clock = FakeClock()
    resolver = _cached_resolver(clock)
    resolver.cache.put(("gone.test", "TXT"), _NX, 100, negative=True)  # a cached NXDOMAIN
    derived: DerivedCache[str, str] = DerivedCache(ttl=200, clock=clock)
    trail, found = _derive(resolver, "a.test", "gone.test")
    assert found == ["[b'v=spf1 -all']", "nxdomain"]
    derived.put("key", "value", trail)
    assert derived.get("key") == "value" and derived.get("other") is None
    clock.now += 101  # the cached NXDOMAIN expired: asking again might find a record
    assert derived.get("key") is None and len(derived) == 0


def test_derived_value_goes_when_an_answer_is_replaced_or_its_own_ttl_ends() -> None:
    clock = FakeClock()
    resolver = _cached_resolver(clock)
    derived: DerivedCache[str, str] = DerivedCache(ttl=60, clock=clock)
    trail, _ = _derive(resolver, "a.test")
    derived.put("key", "value", trail)
    resolver.cache.put(("a.test", "TXT"), [b"v=spf1 +all"], 300, negative=False)
    assert derived.get("key") is None  # the record changed: the value must be worked out again
    trail, _ = _derive(resolver, "a.test")
    derived.put("key", "again", trail)
    clock.now += 59
    assert derived.get("key") == "again"
    clock.now += 2  # the DNS answer still lives (300 s), the derived value does not (60 s)
    assert derived.get("key") is None


def test_derived_value_from_an_uncached_answer_is_not_kept() -> None:
    clock = FakeClock()
    resolver = _cached_resolver(clock)
    derived: DerivedCache[str, str] = DerivedCache(clock=clock)
    trail = resolver.tracking()

    async def ask() -> None:
        with pytest.raises(DnsTempError):
            await trail.txt("unknown.test")  # not cached, and no server answers

    asyncio.run(ask())
    derived.put("key", "value", trail)
    assert derived.get("key") is None and len(derived) == 0


def test_derived_cache_is_bounded_least_recently_used_first() -> None:
    clock = FakeClock()
    resolver = _cached_resolver(clock)
    derived: DerivedCache[str, int] = DerivedCache(2, clock=clock)
    for n, key in enumerate(("x", "y")):
        derived.put(key, n, _derive(resolver, "a.test")[0])
    assert derived.get("x") == 0  # y is now the least recently used
    derived.put("z", 2, _derive(resolver, "a.test")[0])
    assert len(derived) == 2 and derived.get("y") is None
    assert derived.get("x") == 0 and derived.get("z") == 2


# --- DnsPythonResolver against dnsmasq --------------------------------------------


def _wait_for_server(port: int) -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x04ping\x04test\x00\x00\x01\x00\x01"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, ("127.0.0.1", port))
                sock.recv(512)
                return
            except OSError:
                continue
    raise RuntimeError("dnsmasq did not start answering")


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A dnsmasq serving example.test on 127.0.0.1; yields (port, query log)."""
    binary = shutil.which("dnsmasq") or (
        "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
    )
    if binary is None:
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    port = free_port()
    log = tmp_path_factory.mktemp("dnsmasq") / "queries.log"
    args = [
        binary,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--pid-file=",
        "--user=" + pwd.getpwuid(os.getuid()).pw_name,  # no privilege change needed
        "--local=/example.test/",
        "--local-ttl=300",
        "--log-queries",
        f"--log-facility={log}",
        "--txt-record=example.test,v=spf1 ip4:192.0.2.0/24, -all",
        "--txt-record=example.test,hello",
        "--host-record=mail.example.test,192.0.2.1,2001:db8::1",
        "--host-record=gather.example.test,192.0.2.7",
        "--mx-host=example.test,mail.example.test,10",
        "--ptr-record=1.2.0.192.in-addr.arpa,mail.example.test",
        "--cname=alias.example.test,mail.example.test",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_server(port)
    except RuntimeError:
        process.kill()
        _, err = process.communicate()
        pytest.skip(f"dnsmasq did not start: {err.decode(errors='replace')[:200]}")
    yield port, log
    process.terminate()
    process.wait(timeout=5)


def _queries(log: Path, name: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if "query[" in line and name in line)


def test_real_server_answers(dnsmasq: tuple[int, Path]) -> None:
    port, _ = dnsmasq
    resolver = DnsPythonResolver(["127.0.0.1"], port=port, timeout=1, lifetime=2)

    async def run() -> None:
        assert sorted(await resolver.txt("example.test")) == [
            b"hello",
            b"v=spf1 ip4:192.0.2.0/24 -all",
        ]
        assert await resolver.a("mail.example.test") == ["192.0.2.1"]
        assert await resolver.aaaa("mail.example.test.") == ["2001:db8::1"]
        assert await resolver.mx("example.test") == [MxRecord(10, "mail.example.test")]
        assert await resolver.ptr("192.0.2.1") == ["mail.example.test"]
        assert await resolver.a("alias.example.test") == ["192.0.2.1"]  # CNAME followed
        assert await resolver.txt("mail.example.test") == []  # no data
        with pytest.raises(NXDomain):
            await resolver.a("nothing.example.test")
        with pytest.raises(NXDomain):
            await resolver.a("x" * 64 + ".example.test")  # cannot exist
        with pytest.raises(ServFail):
            await resolver.a("elsewhere.invalid")  # dnsmasq REFUSED: not its zone

    asyncio.run(run())


def test_real_server_caching(dnsmasq: tuple[int, Path]) -> None:
    port, log = dnsmasq
    clock = FakeClock()
    cache = DnsCache(max_negative_ttl=10, clock=clock)
    resolver = DnsPythonResolver(["127.0.0.1"], port=port, cache=cache)

    async def run() -> None:
        for _ in range(3):
            assert await resolver.a("mail.example.test") == ["192.0.2.1"]
            with pytest.raises(NXDomain):
                await resolver.txt("cached-nx.example.test")
        together = await asyncio.gather(*(resolver.a("gather.example.test") for _ in range(5)))
        assert together == [["192.0.2.7"]] * 5
        clock.now += 11  # past the negative cap, within the 300 s positive TTL
        await resolver.a("mail.example.test")
        with pytest.raises(NXDomain):
            await resolver.txt("cached-nx.example.test")

    asyncio.run(run())
    time.sleep(0.2)  # let dnsmasq flush its log
    assert _queries(log, "cached-nx.example.test") == 2
    assert _queries(log, "gather.example.test") == 1  # five concurrent asks, one query
    assert cache.hits >= 5


def test_timeout_when_nothing_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never read: queries go unanswered
        port = silent.getsockname()[1]
        resolver = DnsPythonResolver(["127.0.0.1"], port=port, timeout=0.2, lifetime=0.5)
        started = time.monotonic()
        with pytest.raises(DnsTimeout):
            asyncio.run(resolver.txt("example.test"))
        assert time.monotonic() - started < 3


def test_refused_port_is_temp_failure() -> None:
    resolver = DnsPythonResolver(["127.0.0.1"], port=free_port(), timeout=0.2, lifetime=0.5)
    with pytest.raises((ServFail, DnsTimeout)):
        asyncio.run(resolver.a("example.test"))


# --- DNSSEC: trust, the zone resolver, and unbound validating signed zones -------


def test_the_ad_bit_is_believed_from_loopback_resolvers_only_by_default() -> None:
    assert trusts_ad(None, ["127.0.0.1", "::1"])
    assert trusts_ad(None, ["127.0.0.53"])
    assert not trusts_ad(None, ["127.0.0.1", "192.0.2.53"])
    assert not trusts_ad(None, [])
    assert trusts_ad(True, ["192.0.2.53"]) and not trusts_ad(False, ["127.0.0.1"])
    assert DnsPythonResolver(["127.0.0.1"]).validating
    assert not DnsPythonResolver(["192.0.2.53"]).validating
    assert not DnsPythonResolver(["127.0.0.1"], trust_ad=False).validating


def test_zone_resolver_secure_zones_and_bogus_answers() -> None:
    record = TlsaRecord(3, 1, 1, bytes(32))
    zone = ZoneResolver.from_mapping(
        {
            "dane.test": {"MX": [(10, "mx.dane.test")]},
            "mx.dane.test": {"A": ["192.0.2.25"]},
            "_25._tcp.mx.dane.test": {"TLSA": [record, "2 1 1 " + "ab" * 32]},
            "plain.test": {"MX": [(10, "mx.plain.test")]},
        }
    )
    zone.secure_zones.add("dane.test")
    zone.bogus.add(("_25._tcp.mx.plain.test", "TLSA"))

    async def run() -> None:
        assert await zone.mx_validated("dane.test") == Validated(
            [MxRecord(10, "mx.dane.test")], True
        )
        assert await zone.a_validated("MX.dane.test.") == Validated(["192.0.2.25"], True)
        tlsa = await zone.tlsa("_25._tcp.mx.dane.test")
        assert tlsa.secure and tlsa.records == [record, TlsaRecord(2, 1, 1, bytes([0xAB] * 32))]
        assert await zone.tlsa("_25._tcp.nothing.dane.test") == Validated([], False)
        assert not (await zone.mx_validated("plain.test")).secure
        with pytest.raises(DnssecBogus):
            await zone.tlsa("_25._tcp.mx.plain.test")
        zone.add("alias.dane.test", "CNAME", "mx.dane.test")
        zone.add("away.dane.test", "CNAME", "mx.plain.test")
        zone.add("mx.plain.test", "A", "192.0.2.26")
        aliased = await zone.a_validated("alias.dane.test")
        assert aliased == Validated(["192.0.2.25"], True, "mx.dane.test")
        assert await zone.a_validated("away.dane.test") == Validated(
            ["192.0.2.26"], False, "mx.plain.test"
        )
        assert await zone.cname_validated("away.dane.test") == Validated(["mx.plain.test"], True)
        assert await zone.cname_validated("mx.plain.test") == Validated([], False)
        zone.validating = False
        assert not (await zone.mx_validated("dane.test")).secure

    asyncio.run(run())


_TLSA = "3 1 1 " + "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """unbound validating dane.test (signed), bogus.test (a TLSA changed after signing),
    expired.test (signatures run out) and plain.test (unsigned); yields the port."""
    records = ["@ IN MX 10 mx", "mx IN A 192.0.2.25", f"_25._tcp.mx IN TLSA {_TLSA}"]
    records += ["alias IN CNAME mx", "away IN CNAME mx.plain.test."]
    zones = [
        TestZone("dane.test", records),
        TestZone("bogus.test", records, tamper={"3 1 1 0123": "3 1 1 ff23"}),
        TestZone("expired.test", records, expired=True),
        TestZone("plain.test", records, signed=False),
    ]
    with unbound_server(tmp_path_factory.mktemp("dnssec"), zones) as port:
        yield port


def test_validated_answers_from_unbound(unbound: int) -> None:
    resolver = DnsPythonResolver(["127.0.0.1"], port=unbound, timeout=1, lifetime=2)

    async def run() -> None:
        assert await resolver.mx("dane.test") == [MxRecord(10, "mx.dane.test")]
        misses = resolver.cache.misses
        mx = await resolver.mx_validated("dane.test")  # the plain answer's security, cached
        assert mx == Validated([MxRecord(10, "mx.dane.test")], True)
        assert resolver.cache.misses == misses
        assert await resolver.a_validated("mx.dane.test") == Validated(["192.0.2.25"], True)
        assert await resolver.aaaa_validated("mx.dane.test") == Validated([], True)
        tlsa = await resolver.tlsa("_25._tcp.mx.dane.test")
        assert tlsa == Validated([TlsaRecord.from_text(_TLSA)], True)
        assert await resolver.tlsa("_26._tcp.mx.dane.test") == Validated([], False)  # NXDOMAIN
        with pytest.raises(NXDomain):
            await resolver.a_validated("nothing.dane.test")
        plain = await resolver.tlsa("_25._tcp.mx.plain.test")
        assert plain == Validated([TlsaRecord.from_text(_TLSA)], False)
        assert not (await resolver.mx_validated("plain.test")).secure

    asyncio.run(run())


def test_answers_through_cnames_say_where_they_ended_and_how_secure(unbound: int) -> None:
    resolver = DnsPythonResolver(["127.0.0.1"], port=unbound, timeout=1, lifetime=2)

    async def run() -> None:
        aliased = await resolver.a_validated("alias.dane.test")
        assert aliased == Validated(["192.0.2.25"], True, "mx.dane.test")
        assert (await resolver.a_validated("mx.dane.test")).canonical == ""
        away = await resolver.a_validated("away.dane.test")  # into the unsigned zone
        assert away == Validated(["192.0.2.25"], False, "mx.plain.test")
        assert await resolver.cname_validated("away.dane.test") == Validated(
            ["mx.plain.test"], True
        )
        assert await resolver.cname_validated("mx.dane.test") == Validated([], True)
        assert await resolver.cname_validated("away.plain.test") == Validated(
            ["mx.plain.test"], False
        )
        misses = resolver.cache.misses
        assert (await resolver.a_validated("alias.dane.test")).canonical == "mx.dane.test"
        assert resolver.cache.misses == misses  # kept with the cached answer

    asyncio.run(run())


def test_bogus_answers_are_temporary_failures_that_say_why(unbound: int) -> None:
    resolver = DnsPythonResolver(["127.0.0.1"], port=unbound, timeout=1, lifetime=2)

    async def run() -> None:
        assert (await resolver.mx_validated("bogus.test")).secure  # only the TLSA was changed
        with pytest.raises(DnssecBogus, match=r"DNSSEC validation failed \(dnssec bogus"):
            await resolver.tlsa("_25._tcp.mx.bogus.test")
        with pytest.raises(DnssecBogus, match="signature expired"):
            await resolver.mx("expired.test")
        with pytest.raises(DnssecBogus):  # never cached: asked again, failing again
            await resolver.tlsa("_25._tcp.mx.bogus.test")

    asyncio.run(run())


def test_an_untrusted_resolver_makes_nothing_secure(unbound: int) -> None:
    resolver = DnsPythonResolver(["127.0.0.1"], port=unbound, timeout=1, lifetime=2, trust_ad=False)

    async def run() -> None:
        assert await resolver.mx_validated("dane.test") == Validated(
            [MxRecord(10, "mx.dane.test")], False
        )
        with pytest.raises(ServFail) as failed:  # still a failure, but not called bogus
            await resolver.tlsa("_25._tcp.mx.bogus.test")
        assert type(failed.value) is ServFail

    asyncio.run(run())


@pytest.mark.parametrize(
    ("setting", "nameservers", "validating"),
    [
        ("", '["127.0.0.1"]', True),  # the default: loopback resolvers are believed
        ("", '["127.0.0.1", "192.0.2.53"]', False),
        ('dnssec = "trusted"\n', '["192.0.2.53"]', True),
        ('dnssec = "off"\n', '["127.0.0.1"]', False),
    ],
)
def test_the_dns_dnssec_setting_decides_what_the_resolver_believes(
    setting: str, nameservers: str, validating: bool
) -> None:
    text = f'hostname = "mx.example.test"\ndata_dir = "d"\n[dns]\nnameservers = {nameservers}\n'
    config = validate_text(text + setting, "poczta.toml")
    assert build_resolver(config).validating is validating


def test_an_unknown_dnssec_setting_is_refused() -> None:
    text = 'hostname = "mx.example.test"\ndata_dir = "d"\n[dns]\ndnssec = "yes"\n'
    with pytest.raises(ConfigError, match=r"dns\.dnssec: unknown value 'yes'"):
        validate_text(text, "poczta.toml")
