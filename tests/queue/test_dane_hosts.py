"""Which TLSA records an MX host gets (poczta.queue.dane_hosts), above all through CNAMEs:
the expanded name first when the whole chain is secure, the MX host name alone when it
is not (RFC 7672 2.2.2), over an in-memory zone whose secure parts each test chooses."""

from __future__ import annotations

import asyncio

from poczta.dns import TlsaRecord, ZoneResolver
from poczta.queue.dane import DanePolicy
from poczta.queue.dane_hosts import DaneHosts, dane_hosts
from poczta.queue.mx import MxFailure, MxHost, MxPlan

DOMAIN, MX, TARGET = "dane.test", "mx.dane.test", "smtp.hosting.test"
AT_MX = TlsaRecord(3, 1, 1, bytes([1]) * 32)
AT_TARGET = TlsaRecord(3, 1, 1, bytes([2]) * 32)


def zone(*, mx_tlsa: bool = True, target_tlsa: bool = True) -> ZoneResolver:
    """dane.test's MX an alias of a host in hosting.test; both zones signed."""
    resolver = ZoneResolver.from_mapping(
        {
            DOMAIN: {"MX": [(10, MX)]},
            MX: {"CNAME": [TARGET]},
            TARGET: {"A": ["192.0.2.25"]},
        }
    )
    if mx_tlsa:
        resolver.add(f"_25._tcp.{MX}", "TLSA", AT_MX)
    if target_tlsa:
        resolver.add(f"_25._tcp.{TARGET}", "TLSA", AT_TARGET)
    resolver.secure_zones.update({DOMAIN, "hosting.test"})
    return resolver


def policy_of(resolver: ZoneResolver, host: str = MX) -> DanePolicy | None:
    plan = MxPlan(DOMAIN, (MxHost(host, 10, ("192.0.2.25",)),))
    found = asyncio.run(dane_hosts(resolver, plan, 25))
    assert isinstance(found, DaneHosts)
    return found.policy(host)


def test_a_secure_chain_looks_at_the_end_of_it_first() -> None:
    policy = policy_of(zone())
    assert policy is not None
    assert policy.tlsa_name == f"_25._tcp.{TARGET}" and policy.records == (AT_TARGET,)
    assert policy.names == (TARGET, MX, DOMAIN)  # the expanded name is a reference name too


def test_a_secure_chain_falls_back_to_the_mx_host_name() -> None:
    policy = policy_of(zone(target_tlsa=False))
    assert policy is not None and policy.tlsa_name == f"_25._tcp.{MX}"
    assert policy.records == (AT_MX,) and TARGET in policy.names


def test_insecure_records_at_the_end_of_the_chain_fall_back_too() -> None:
    resolver = zone()
    resolver.records[f"_25._tcp.{TARGET}"] = {"CNAME": ["tlsa.unsigned.test"]}
    resolver.add("tlsa.unsigned.test", "TLSA", AT_TARGET)  # reached, but not secure
    policy = policy_of(resolver)
    assert policy is not None and policy.tlsa_name == f"_25._tcp.{MX}"


def test_an_insecure_link_in_the_chain_leaves_the_mx_host_name_alone() -> None:
    resolver = zone()
    # mx.dane.test (signed) → relay.unsigned.test (not signed) → smtp.hosting.test (signed)
    resolver.records[MX] = {"CNAME": ["relay.unsigned.test"]}
    resolver.add("relay.unsigned.test", "CNAME", TARGET)
    policy = policy_of(resolver)
    assert policy is not None
    assert policy.tlsa_name == f"_25._tcp.{MX}" and policy.names == (MX, DOMAIN)
    assert (f"_25._tcp.{TARGET}", "TLSA") not in resolver.queries
    only_at_target = zone(mx_tlsa=False)
    only_at_target.records[MX] = resolver.records[MX]
    only_at_target.records["relay.unsigned.test"] = resolver.records["relay.unsigned.test"]
    assert policy_of(only_at_target) is None  # opportunistic TLS


def test_an_alias_in_an_unsigned_zone_gets_no_dane() -> None:
    resolver = zone()
    host = "mx.unsigned.test"  # named by the secure MX RRset; its own CNAME is not secure
    resolver.records[DOMAIN]["MX"] = [(10, host)]
    resolver.add(host, "CNAME", TARGET)
    resolver.add(f"_25._tcp.{host}", "TLSA", AT_MX)
    assert policy_of(resolver, host) is None


def test_a_failed_lookup_at_the_end_of_the_chain_fails_the_host() -> None:
    resolver = zone()
    resolver.bogus.add((f"_25._tcp.{TARGET}", "TLSA"))
    plan = MxPlan(DOMAIN, (MxHost(MX, 10, ("192.0.2.25",)),))
    found = asyncio.run(dane_hosts(resolver, plan, 25))
    assert isinstance(found, MxFailure) and found.enhanced == "4.7.5"
    assert found.text.startswith(f"TLSA lookup of _25._tcp.{TARGET} failed, so {MX} cannot")


def test_a_host_that_is_no_alias_has_its_own_name_only() -> None:
    resolver = zone()
    resolver.records[MX] = {"A": ["192.0.2.25"]}
    policy = policy_of(resolver)
    assert policy is not None and policy.tlsa_name == f"_25._tcp.{MX}"
    assert policy.names == (MX, DOMAIN)
    assert all(rtype != "CNAME" for _, rtype in resolver.queries)  # no extra question
