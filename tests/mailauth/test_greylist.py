"""Greylisting with an injected clock: first seen, early retry, pass, whitelisting, exemptions."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.clock import Clock

from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.greylist import (
    GreylistDecision,
    Greylister,
    GreylistOutcome,
    GreylistSettings,
    GreylistTriplet,
    MemoryGreylistStore,
    client_network,
    normalize_sender,
    verified_domains,
)

T = TypeVar("T")
T0 = 1_700_000_000.0
DAY = 86_400.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make(**options: Any) -> tuple[Greylister, MemoryGreylistStore, Clock]:
    store, clock = MemoryGreylistStore(), Clock(T0)
    return Greylister(store, GreylistSettings(**options), clock), store, clock


def attempt(
    g: Greylister,
    ip: str = "192.0.2.10",
    sender: str = "Alice@Example.ORG",
    rcpt: str = "bob@example.test",
    verified: tuple[str, ...] = (),
) -> GreylistDecision:
    return run(g.check(ip, sender, rcpt, verified=verified))


def test_triplet_parts() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("192.0.2.77", ipv4_prefix=32) == "192.0.2.77/32"
    assert client_network("garbage") is None
    assert client_network("[IPv6:fe80::1%eth0]") == "fe80::/64"
    assert normalize_sender("<Alice@Example.ORG>") == "alice@example.org"
    assert normalize_sender("") == "" and normalize_sender("<>") == ""
    assert normalize_sender("prvs=1234abcd=Alice@example.org") == "alice@example.org"


def test_lifecycle_first_seen_early_retry_pass_whitelisted() -> None:
    g, store, clock = make()
    first = attempt(g)
    assert first.outcome is GreylistOutcome.DEFER and first.deferred
    assert (first.code, first.enhanced) == (451, "4.7.1")
    assert first.text == "Greylisted, please try again in 300 seconds"
    assert first.reason == "first seen"
    assert first.triplet == GreylistTriplet("192.0.2.0/24", "alice@example.org", "bob@example.test")

    clock.now += 100
    early = attempt(g, ip="192.0.2.11")  # a neighbour in the same /24 is the same client
    assert early.deferred and early.retry_in == 200
    assert early.text == "Greylisted, please try again in 200 seconds"
    clock.now += 199.5
    assert attempt(g).retry_in == 1  # rounded up, never 0

    clock.now = T0 + 300
    passed = attempt(g)
    assert passed.outcome is GreylistOutcome.PASS and not passed.deferred
    record = store.triplets[passed.triplet]  # type: ignore[index]
    assert record.passed_at == T0 + 300 and record.attempts == 4
    assert record.expires == T0 + 300 + 36 * DAY

    clock.now += 30 * DAY
    again = attempt(g)
    assert again.outcome is GreylistOutcome.WHITELISTED
    assert store.triplets[again.triplet].expires == clock.now + 36 * DAY  # type: ignore[index]

    other = attempt(g, rcpt="carol@example.test")  # a new triplet is greylisted anew
    assert other.deferred and other.reason == "first seen"


def test_retry_after_window_starts_again() -> None:
    g, _, clock = make()
    assert attempt(g).deferred
    clock.now += DAY + 1
    late = attempt(g)
    assert late.deferred and late.reason == "retry window expired" and late.retry_in == 300
    clock.now += 300
    assert attempt(g).outcome is GreylistOutcome.PASS


def test_whitelisting_expires_after_its_period() -> None:
    g, _, clock = make(whitelist_period=10 * DAY)
    attempt(g)
    clock.now += 300
    assert attempt(g).outcome is GreylistOutcome.PASS
    clock.now += 10 * DAY
    expired = attempt(g)
    assert expired.deferred and expired.reason == "whitelisting expired"


def test_network_scope_whitelists_the_whole_network() -> None:
    g, store, clock = make(whitelist_scope="network")
    attempt(g)
    clock.now += 300
    assert attempt(g).outcome is GreylistOutcome.PASS
    other = attempt(g, ip="192.0.2.200", sender="", rcpt="dave@example.test")
    assert other.outcome is GreylistOutcome.WHITELISTED and other.reason == "network whitelisted"
    assert attempt(g, ip="198.51.100.1").deferred  # another network is not
    assert store.networks["192.0.2.0/24"].whitelisted_until == clock.now + 36 * DAY


def test_reputation_auto_whitelists_a_network_after_n_passes() -> None:
    g, store, clock = make(auto_whitelist_after=3)
    for n in range(3):
        rcpt = f"user{n}@example.test"
        assert attempt(g, rcpt=rcpt).deferred
        clock.now += 300
        assert attempt(g, rcpt=rcpt).outcome is GreylistOutcome.PASS
        clock.now += 60
    assert store.networks["192.0.2.0/24"].passes == 3
    fresh = attempt(g, sender="new@elsewhere.test", rcpt="new@example.test")
    assert fresh.outcome is GreylistOutcome.WHITELISTED


def test_reputation_counts_only_passes_within_a_period() -> None:
    g, store, clock = make(auto_whitelist_after=2, whitelist_period=DAY * 2)
    attempt(g, rcpt="a@example.test")
    clock.now += 300
    attempt(g, rcpt="a@example.test")
    clock.now += 3 * DAY  # the network record has expired
    attempt(g, rcpt="b@example.test")
    clock.now += 300
    assert attempt(g, rcpt="b@example.test").outcome is GreylistOutcome.PASS
    assert store.networks["192.0.2.0/24"].passes == 1
    assert attempt(g, rcpt="c@example.test").deferred


def test_reputation_rule_can_be_turned_off() -> None:
    g, store, clock = make(auto_whitelist_after=0)
    for n in range(10):
        attempt(g, rcpt=f"u{n}@example.test")
        clock.now += 300
        attempt(g, rcpt=f"u{n}@example.test")
    assert store.networks["192.0.2.0/24"].whitelisted_until == 0
    assert attempt(g, rcpt="other@example.test").deferred


def test_ipv6_clients_share_their_64() -> None:
    g, _, clock = make()
    attempt(g, ip="2001:db8:1:2::25")
    clock.now += 300
    assert attempt(g, ip="2001:db8:1:2:ffff::1").outcome is GreylistOutcome.PASS


@pytest.mark.parametrize(
    ("options", "kwargs", "why"),
    [
        ({"exempt_networks": ("192.0.2.0/28",)}, {}, "exempt network"),
        ({"exempt_recipient_domains": ("example.test",)}, {}, "recipient domain exempt"),
        ({"exempt_sender_domains": ("example.org",)}, {}, "sender domain exempt"),
        ({"trusted_domains": ("example.org",)}, {"verified": ("mail.example.org",)}, "example"),
        ({"enabled": False}, {}, "disabled"),
        ({}, {"ip": "unix-socket"}, "no client address"),
    ],
)
def test_exemptions(options: dict[str, Any], kwargs: dict[str, Any], why: str) -> None:
    g, store, _ = make(**options)
    decision = attempt(g, **kwargs)
    assert decision.outcome is GreylistOutcome.EXEMPT and why in decision.reason
    assert not store.triplets


def test_untrusted_verified_domain_is_not_exempt() -> None:
    g, _, _ = make(trusted_domains=("example.org",))
    assert attempt(g, verified=("evil-example.org",)).deferred


def test_verified_domains() -> None:
    sigs = [
        DkimResult(DkimStatus.PASS, domain="mail.example.org"),
        DkimResult(DkimStatus.PASS, domain="unrelated.test"),
        DkimResult(DkimStatus.FAIL, domain="example.org"),
    ]
    assert verified_domains(("pass", "bounce.example.net"), sigs, "example.org") == (
        "bounce.example.net",
        "mail.example.org",
    )
    assert verified_domains(("softfail", "x.test"), sigs, "") == ()


def test_sweep_expires_pending_and_whitelisted_entries() -> None:
    g, store, clock = make(whitelist_period=10 * DAY)
    attempt(g, rcpt="pending@example.test")
    attempt(g, rcpt="passed@example.test")
    clock.now += 300
    attempt(g, rcpt="passed@example.test")
    assert run(g.sweep()) == 0
    assert run(g.sweep(T0 + DAY)) == 1  # the pending one, past its retry window
    assert len(store.triplets) == 1 and len(store.networks) == 1
    assert run(g.sweep(T0 + 300 + 10 * DAY)) == 2  # the whitelisted triplet and network
    assert not store.triplets and not store.networks


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        GreylistSettings(whitelist_scope="domain")
    with pytest.raises(ValueError):
        GreylistSettings(ipv4_prefix=33)
    with pytest.raises(ValueError):
        GreylistSettings(delay=600, retry_window=300)
    with pytest.raises(ValueError):
        GreylistSettings(exempt_networks=("nonsense",))


@settings(max_examples=150, deadline=None)
@given(
    ip=st.one_of(
        st.text(max_size=40),
        st.ip_addresses().map(str),
        st.tuples(st.ip_addresses(v=6), st.text(max_size=5)).map(lambda t: f"{t[0]}%{t[1]}"),
    ),
    sender=st.text(max_size=60),
    rcpt=st.text(max_size=60),
    verified=st.lists(st.text(max_size=30), max_size=3),
    steps=st.lists(st.floats(min_value=0, max_value=40 * DAY), max_size=4),
)
def test_odd_inputs_never_raise(
    ip: str, sender: str, rcpt: str, verified: list[str], steps: list[float]
) -> None:
    g, _, clock = make(
        exempt_sender_domains=("example.org",),
        exempt_recipient_domains=("example.test",),
        trusted_domains=("example.net",),
    )
    for step in steps or [0.0]:
        clock.now += step
        decision = attempt(g, ip, sender, rcpt, tuple(verified))
        assert decision.outcome in GreylistOutcome
        assert decision.retry_in >= (1 if decision.deferred else 0)
    run(g.sweep())


def test_whitelisted_triplet_is_trusted_without_the_store_for_an_hour() -> None:
    g, store, clock = make(delay=300)
    assert attempt(g).outcome is GreylistOutcome.DEFER
    clock.now += 301
    assert attempt(g).outcome is GreylistOutcome.PASS
    clock.now += 10
    assert attempt(g).outcome is GreylistOutcome.WHITELISTED  # confirmed from the store
    asked: list[str] = []
    original = store.get_triplet

    async def counting_get(triplet: GreylistTriplet) -> Any:
        asked.append(triplet.recipient)
        return await original(triplet)

    store.get_triplet = counting_get  # type: ignore[method-assign]
    clock.now += 1800
    assert attempt(g).outcome is GreylistOutcome.WHITELISTED
    assert asked == []  # within the hour: no store round trip
    clock.now += Greylister.RECONFIRM_SECONDS
    assert attempt(g).outcome is GreylistOutcome.WHITELISTED
    assert asked == ["bob@example.test"]  # after it: confirmed (and renewed) again


def test_known_answers_without_the_store_only_what_check_would_answer() -> None:
    g, _, clock = make(delay=300, exempt_sender_domains=("lists.example",))
    assert g.known("192.0.2.10", "alice@example.org", "bob@example.test") is None  # unknown
    exempt = g.known("192.0.2.10", "news@lists.example", "bob@example.test")
    assert exempt is not None and exempt.outcome is GreylistOutcome.EXEMPT
    assert attempt(g).deferred
    clock.now += 301
    assert g.known("192.0.2.10", "alice@example.org", "bob@example.test") is None  # pending
    assert attempt(g).outcome is GreylistOutcome.PASS
    clock.now += 10
    from_store = attempt(g)  # whitelisted, as the store says
    known = g.known("192.0.2.10", "alice@example.org", "bob@example.test")
    assert known is not None and known == from_store == attempt(g)
    assert known.outcome is GreylistOutcome.WHITELISTED
    clock.now += Greylister.RECONFIRM_SECONDS + 1  # time to ask the store again
    assert g.known("192.0.2.10", "alice@example.org", "bob@example.test") is None
