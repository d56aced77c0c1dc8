"""The checks' cached SPF results and blocklist answers: reused only while they would be
worked out the same, keyed by everything they depend on."""

from __future__ import annotations

import asyncio

from poczta.dns import _NX, DnsCache, DnsPythonResolver
from poczta.mailauth.dnsbl import DnsblKind, DnsblZone
from poczta.mailauth.greylist import Greylister, GreylistSettings, MemoryGreylistStore
from poczta.smtp.checks import CheckDecision, MailChecks
from tests.clock import Clock
from tests.e2e.harness import free_port

GOOD_IP = "192.0.2.10"
OTHER_IP = "192.0.2.11"
SPF_GOOD = [b"v=spf1 ip4:192.0.2.10 -all"]


def cached_resolver(clock: Clock) -> DnsPythonResolver:
    """A resolver answering only from its cache (no server listens on its port)."""
    resolver = DnsPythonResolver(
        ["127.0.0.1"], port=free_port(), timeout=0.2, lifetime=0.5,
        cache=DnsCache(clock=clock),
    )  # fmt: skip
    fill(resolver.cache)
    return resolver


def fill(cache: DnsCache) -> None:
    """The answers of the test zone, each cached for 300 seconds."""
    put = cache.put
    put(("good.test", "TXT"), SPF_GOOD, 300, negative=False)
    put(("_dmarc.good.test", "TXT"), [b"v=DMARC1; p=reject"], 300, negative=False)
    put(("client.test", "TXT"), [b"v=spf1 ip4:192.0.2.11 -all"], 300, negative=False)
    for ip in (GOOD_IP, OTHER_IP):
        reversed_ip = ".".join(reversed(ip.split(".")))
        put((f"{reversed_ip}.bl.test", "A"), _NX, 300, negative=True)
    for domain in ("good.test", "client.test", "other.test"):
        put((f"{domain}.dbl.test", "A"), _NX, 300, negative=True)
    put(("other.test", "TXT"), _NX, 300, negative=True)


def make_checks(resolver: DnsPythonResolver) -> MailChecks:
    greylister = Greylister(MemoryGreylistStore(), GreylistSettings(enabled=False))
    zones = [DnsblZone("bl.test"), DnsblZone("dbl.test", DnsblKind.DOMAIN)]
    return MailChecks(resolver, authserv_id="mx.test", zones=zones, greylister=greylister)


def message(sender: str) -> bytes:
    return f"From: <{sender}>\r\nTo: <bob@example.test>\r\nSubject: hi\r\n\r\nHi.\r\n".encode()


def deliver(checks: MailChecks, ip: str, sender: str, helo: str = "client.test") -> CheckDecision:
    async def go() -> CheckDecision:
        inbound = checks.connect(ip)
        inbound.mail_from(sender, helo)
        assert not (await inbound.recipient("bob@example.test")).refused
        done = await inbound.message(message(sender or "alice@good.test"))
        inbound.close()
        return done

    return asyncio.run(go())


def spf_of(decision: CheckDecision) -> str:
    spf = decision.verdict.results.spf
    assert spf is not None
    return spf.result.value


def test_a_repeated_transaction_is_answered_from_the_cached_results() -> None:
    clock = Clock()
    resolver = cached_resolver(clock)
    checks = make_checks(resolver)
    first = deliver(checks, GOOD_IP, "alice@good.test")
    asked = resolver.cache.hits
    again = deliver(checks, GOOD_IP, "alice@good.test")
    assert spf_of(first) == spf_of(again) == "pass" and not again.junk
    assert again.verdict.results.dnsbl == first.verdict.results.dnsbl
    assert again.headers == first.headers
    # SPF, both blocklists and the DMARC policy came from their own caches: no DNS asked.
    assert resolver.cache.hits == asked


def test_spf_results_are_keyed_by_client_sender_and_helo() -> None:
    checks = make_checks(cached_resolver(Clock()))
    assert spf_of(deliver(checks, GOOD_IP, "alice@good.test")) == "pass"
    assert spf_of(deliver(checks, OTHER_IP, "alice@good.test")) == "fail"  # another client
    assert spf_of(deliver(checks, GOOD_IP, "alice@good.test")) == "pass"
    # The null sender is checked as the HELO name, so the HELO is part of the key too.
    assert spf_of(deliver(checks, OTHER_IP, "", helo="client.test")) == "pass"
    assert spf_of(deliver(checks, OTHER_IP, "", helo="other.test")) == "none"


def test_a_changed_record_is_seen_at_once_and_a_failure_is_never_served_as_a_pass() -> None:
    clock = Clock()
    resolver = cached_resolver(clock)
    checks = make_checks(resolver)
    assert spf_of(deliver(checks, GOOD_IP, "alice@good.test")) == "pass"
    # The domain withdraws the client's permission; the new answer reaches the DNS cache.
    resolver.cache.put(("good.test", "TXT"), [b"v=spf1 -all"], 300, negative=False)
    assert spf_of(deliver(checks, GOOD_IP, "alice@good.test")) == "fail"
    resolver.cache.put(("good.test", "TXT"), SPF_GOOD, 300, negative=False)
    assert spf_of(deliver(checks, GOOD_IP, "alice@good.test")) == "pass"


def test_a_listing_that_appears_is_seen_once_the_cached_answer_expires() -> None:
    clock = Clock()
    resolver = cached_resolver(clock)
    checks = make_checks(resolver)
    assert not deliver(checks, GOOD_IP, "alice@good.test").refused
    clock.now += 301  # every DNS answer expired; asked again, the blocklist lists the client
    fill(resolver.cache)
    resolver.cache.put(("10.2.0.192.bl.test", "A"), ["127.0.0.2"], 300, negative=False)
    resolver.cache.put(("10.2.0.192.bl.test", "TXT"), [b"listed"], 300, negative=False)

    async def go() -> CheckDecision:
        inbound = checks.connect(GOOD_IP)
        inbound.mail_from("alice@good.test", "client.test")
        decision = await inbound.recipient("bob@example.test")
        inbound.close()
        return decision

    refused = asyncio.run(go())
    assert refused.refused and refused.verdict.code == 554


def test_temporary_failures_are_asked_again() -> None:
    clock = Clock()
    resolver = cached_resolver(clock)
    checks = make_checks(resolver)
    unknown = "carol@unknown.test"  # nothing cached for it: every lookup fails for now
    assert spf_of(deliver(checks, GOOD_IP, unknown)) == "temperror"
    assert len(checks.spf_results) == 0
    resolver.cache.put(("unknown.test", "TXT"), [b"v=spf1 ip4:192.0.2.10 -all"], 300,
                       negative=False)  # fmt: skip
    assert spf_of(deliver(checks, GOOD_IP, unknown)) == "pass"


def test_a_changed_dmarc_policy_is_seen_at_once() -> None:
    resolver = cached_resolver(Clock())
    checks = make_checks(resolver)
    forged = deliver(checks, OTHER_IP, "alice@good.test", helo="other.test")
    assert spf_of(forged) == "fail" and forged.refused  # DMARC fail, p=reject
    resolver.cache.put(("_dmarc.good.test", "TXT"), [b"v=DMARC1; p=none"], 300, negative=False)
    relaxed = deliver(checks, OTHER_IP, "alice@good.test", helo="other.test")
    assert not relaxed.refused and relaxed.junk  # p=none now: only SPF's fail acts
    dmarc = relaxed.verdict.results.dmarc
    assert dmarc is not None and dmarc.result == "fail" and dmarc.policy == "none"
