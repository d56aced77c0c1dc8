"""The checks in SMTP order (connect, MAIL FROM, RCPT, end of DATA) against in-memory zones."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from poczta.dns import ZoneResolver
from poczta.mailauth.dkim_sign import generate_dkim_key, sign_dkim
from poczta.mailauth.dnsbl import DnsblKind, DnsblZone
from poczta.mailauth.greylist import Greylister, GreylistSettings, MemoryGreylistStore
from poczta.mailauth.results import parse_authentication_results
from poczta.mailauth.verdict import Action, CheckResults, PolicySettings, decide
from poczta.message.header import split_header
from poczta.smtp.checks import (
    InboundChecks,
    MailChecks,
    parse_verdict_header,
    verdict_header,
    without_our_claims,
)
from tests.clock import Clock

T = TypeVar("T")
T0 = 1_700_000_000.0
HOST = "mx.example.test"
GOOD_IP = "192.0.2.10"
LISTED_IP = "192.0.2.99"
PRIVATE_KEY, KEY_RECORD = generate_dkim_key("ed25519-sha256")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def zone() -> ZoneResolver:
    z = ZoneResolver()
    z.add("good.test", "TXT", f"v=spf1 ip4:{GOOD_IP} -all")
    z.add("_dmarc.good.test", "TXT", "v=DMARC1; p=reject")
    z.add("sel._domainkey.good.test", "TXT", KEY_RECORD)
    z.add("strict.test", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    z.add("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject")
    z.add("loose.test", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    z.add("99.2.0.192.bl.test", "A", "127.0.0.2")
    z.add("99.2.0.192.bl.test", "TXT", "listed for spam")
    z.add("spammer.test.dbl.test", "A", "127.0.1.2")
    return z


def message(sender: str, *, signed: bool = False, extra: bytes = b"") -> bytes:
    data = (
        f"From: <{sender}>\r\nTo: <bob@example.test>\r\nSubject: hello\r\n".encode()
        + extra
        + b"Message-ID: <1@x>\r\n\r\nHi Bob.\r\n"
    )
    if signed:
        domain = sender.rpartition("@")[2]
        data = sign_dkim(data, domain=domain, selector="sel", private_key=PRIVATE_KEY,
                         algorithm="ed25519-sha256") + data  # fmt: skip
    return data


def make_checks(
    resolver: ZoneResolver | None = None,
    *,
    policy: PolicySettings | None = None,
    greylist: GreylistSettings | None = None,
    clock: Clock | None = None,
    deadline: float = 5.0,
) -> MailChecks:
    clock = clock or Clock(T0)
    store = MemoryGreylistStore()
    greylister = Greylister(store, greylist or GreylistSettings(delay=60), clock)
    zones = [DnsblZone("bl.test"), DnsblZone("dbl.test", DnsblKind.DOMAIN)]
    return MailChecks(
        resolver or zone(),
        authserv_id=HOST,
        policy=policy or PolicySettings(),
        zones=zones,
        greylister=greylister,
        deadline=deadline,
        clock=clock,
    )


async def transaction(
    checks: MailChecks, ip: str, sender: str, helo: str = "client.test"
) -> InboundChecks:
    inbound = checks.connect(ip)
    inbound.mail_from(sender, helo)
    return inbound


def test_passing_mail_is_greylisted_then_accepted_with_results() -> None:
    clock = Clock(T0)
    checks = make_checks(clock=clock)

    async def go() -> None:
        first = await transaction(checks, GOOD_IP, "alice@good.test")
        decision = await first.recipient("bob@example.test")
        assert decision.refused and decision.verdict.code == 451
        assert decision.verdict.enhanced == "4.7.1"
        assert decision.verdict.text == "Greylisted, please try again in 60 seconds"
        first.close()
        clock.now += 61
        retry = await transaction(checks, GOOD_IP, "alice@good.test")
        assert not (await retry.recipient("bob@example.test")).refused
        done = await retry.message(message("alice@good.test", signed=True))
        retry.close()
        assert done.verdict.action is Action.ACCEPT and not done.junk and not done.refused
        header = done.headers.decode()
        assert header.startswith("X-Poczta-Verdict: accept;")
        ar_value = header.split("Authentication-Results: ", 1)[1]
        parsed = parse_authentication_results(ar_value)
        assert parsed.authserv_id == HOST
        found = {r.method: r.result for r in parsed.results}
        assert found == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
        reasons = parse_verdict_header(header.split("\r\nAuthentication-Results")[0][18:])
        assert reasons["reasons"] == (
            "dnsbl=pass policy.zone=bl.test | dnsbl=pass policy.zone=dbl.test"
            ' | greylist=pass reason="retried after the delay"'
        )

    run(go())


def test_listed_client_is_refused_at_rcpt_without_greylisting() -> None:
    checks = make_checks()

    async def go() -> None:
        inbound = await transaction(checks, LISTED_IP, "alice@good.test")
        decision = await inbound.recipient("bob@example.test")
        assert decision.refused and decision.verdict.code == 554
        assert "listed for spam" in decision.verdict.text
        assert decision.verdict.results.greylist is None
        inbound.close()

    run(go())


def test_listed_domain_is_refused_at_rcpt() -> None:
    checks = make_checks()

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "x@spammer.test")
        decision = await inbound.recipient("bob@example.test")
        assert decision.refused and decision.verdict.code == 554
        inbound.close()

    run(go())


def passed_greylisting() -> GreylistSettings:
    return GreylistSettings(exempt_networks=("192.0.2.0/24",))


def test_spf_fail_goes_to_junk_and_dmarc_reject_is_refused() -> None:
    checks = make_checks(greylist=passed_greylisting())

    async def go() -> None:
        junk = await transaction(checks, GOOD_IP, "x@loose.test")
        assert not (await junk.recipient("bob@example.test")).refused
        done = await junk.message(message("x@loose.test"))
        assert done.junk and done.verdict.code == 250
        assert any(r.startswith("spf: SPF fail") for r in done.verdict.reasons)
        rejected = await transaction(checks, GOOD_IP, "x@strict.test")
        await rejected.recipient("bob@example.test")
        refused = await rejected.message(message("x@strict.test"))
        assert refused.refused and refused.verdict.code == 550
        assert refused.headers == b"" and refused.data == b""

    run(go())


def test_report_only_accepts_everything_but_records_it() -> None:
    checks = make_checks(policy=PolicySettings(report_only=True))

    async def go() -> None:
        listed = await transaction(checks, LISTED_IP, "x@strict.test")
        decision = await listed.recipient("bob@example.test")
        assert not decision.refused and decision.verdict.enforced is Action.REJECT
        done = await listed.message(message("x@strict.test"))
        assert done.verdict.action is Action.ACCEPT
        assert done.verdict.enforced is Action.REJECT
        fields = parse_verdict_header(done.headers.decode().split("\r\nAuthentication")[0][18:])
        assert fields["action"] == "accept" and fields["report-only"] == "yes"
        assert "dnsbl" in fields["reasons"]

    run(go())


def test_dns_timeouts_are_temperrors_never_crashes() -> None:
    resolver = zone()
    resolver.timeout |= {"good.test", "_dmarc.good.test", "99.2.0.192.bl.test"}
    resolver.timeout |= {"10.2.0.192.bl.test", "sel._domainkey.good.test"}
    checks = make_checks(resolver, greylist=passed_greylisting())

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "alice@good.test")
        assert not (await inbound.recipient("bob@example.test")).refused  # dnsbl: accept
        done = await inbound.message(message("alice@good.test", signed=True))
        assert done.verdict.results.spf is not None
        assert done.verdict.results.spf.result.value == "temperror"
        assert done.refused and done.verdict.code == 451  # dmarc_temperror defers

    run(go())


def test_slow_checks_hit_the_deadline() -> None:
    class SlowResolver(ZoneResolver):
        async def txt(self, name: str) -> list[bytes]:
            await asyncio.sleep(10)
            return []

    checks = make_checks(
        SlowResolver(), greylist=passed_greylisting(), deadline=0.05,
        policy=PolicySettings(dmarc_temperror="accept"),
    )  # fmt: skip

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "alice@good.test")
        done = await inbound.message(message("alice@good.test"))
        assert done.verdict.results.spf is not None
        assert done.verdict.results.spf.problem == "no answer within 0.05 seconds"
        assert done.verdict.results.dmarc is not None
        assert done.verdict.results.dmarc.result == "temperror"
        assert not done.refused

    run(go())


def test_forged_results_and_verdicts_are_removed() -> None:
    checks = make_checks(greylist=passed_greylisting())
    forged = (
        b"Authentication-Results: MX.example.test; spf=pass\r\n"
        b"Authentication-Results: other.test; spf=fail\r\n"
        b"X-Poczta-Verdict: accept;\r\n\treasons=none\r\n"
    )

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "alice@good.test")
        await inbound.recipient("bob@example.test")
        done = await inbound.message(message("alice@good.test", extra=forged))
        assert b"MX.example.test" not in done.data and b"X-Poczta" not in done.data
        assert b"other.test; spf=fail" in done.data
        assert done.data.endswith(b"\r\n\r\nHi Bob.\r\n")

    run(go())


def test_trusted_domain_passing_spf_skips_greylisting() -> None:
    checks = make_checks(greylist=GreylistSettings(trusted_domains=("good.test",)))

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "alice@good.test")
        decision = await inbound.recipient("bob@example.test")
        assert not decision.refused
        greylist = decision.verdict.results.greylist
        assert greylist is not None and greylist.reason == "authenticated as good.test"

    run(go())


def test_greylist_store_failure_does_not_refuse_mail() -> None:
    class BrokenStore(MemoryGreylistStore):
        async def get_network(self, network: str) -> None:
            raise RuntimeError("database is gone")

    checks = make_checks()
    assert checks.greylister is not None
    checks.greylister.store = BrokenStore()

    async def go() -> None:
        inbound = await transaction(checks, GOOD_IP, "alice@good.test")
        decision = await inbound.recipient("bob@example.test")
        assert not decision.refused

    run(go())


def test_close_cancels_pending_lookups() -> None:
    class HangingResolver(ZoneResolver):
        async def a(self, name: str) -> list[str]:
            await asyncio.sleep(10)
            return []

    checks = make_checks(HangingResolver())

    async def go() -> None:
        inbound = checks.connect(GOOD_IP)
        inbound.mail_from("x@good.test", "client.test")
        await asyncio.sleep(0)
        inbound.close()
        await asyncio.sleep(0.05)  # cancellation reaches the lookups within a few loop turns
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert all(t.cancelled() or t.done() for t in tasks)

    run(go())


@pytest.mark.parametrize(
    "reasons", [[], ['spf: SPF fail for x.test: "quoted" \\ back -> junk', "dkim: none -> x"]]
)
def test_verdict_header_round_trips(reasons: list[str]) -> None:
    verdict = decide(CheckResults(), PolicySettings())
    verdict = type(verdict)(**{**verdict.__dict__, "reasons": reasons})
    header = verdict_header(verdict).decode()
    name, _, value = header.partition(": ")
    assert name == "X-Poczta-Verdict" and header.endswith("\r\n")
    fields = parse_verdict_header(value)
    assert fields["action"] == "accept" and fields["enforced"] == "accept"
    assert fields["reasons"] == (" | ".join(reasons) or "none")


def test_our_claims_are_removed_and_other_bytes_kept() -> None:
    original = (
        b"A: 1\r\nX-Poczta-Verdict: junk;\r\n\tx=1\r\nB: 2\r\n"
        b"Authentication-Results: MX.example.test.; dmarc=pass\r\n"
        b"Authentication-Results: other.test; dmarc=fail\r\n"
        b"\r\nX-Poczta-Verdict: body\r\n"
    )
    stripped, header = without_our_claims(original, split_header(original), "mx.example.test")
    assert stripped == (
        b"A: 1\r\nB: 2\r\nAuthentication-Results: other.test; dmarc=fail\r\n"
        b"\r\nX-Poczta-Verdict: body\r\n"
    )
    assert header == split_header(stripped)
    unchanged, _ = without_our_claims(original, split_header(original), "elsewhere.test")
    assert unchanged == original.replace(b"X-Poczta-Verdict: junk;\r\n\tx=1\r\n", b"")
