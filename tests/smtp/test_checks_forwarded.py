"""Forwarded mail through the checks: SPF fails, the author's aligned DKIM signature decides."""

from __future__ import annotations

from poczta.dns import ZoneResolver
from poczta.mailauth.greylist import GreylistSettings
from poczta.mailauth.results import parse_authentication_results
from poczta.mailauth.verdict import Action
from tests.smtp.test_checks import KEY_RECORD, make_checks, message, run, transaction, zone

FORWARDER_IP = "203.0.113.7"


def forwarded_zone(dmarc: str | None) -> ZoneResolver:
    z = zone()
    z.add("author.test", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    z.add("sel._domainkey.author.test", "TXT", KEY_RECORD)
    if dmarc is not None:
        z.add("_dmarc.author.test", "TXT", dmarc)
    return z


def deliver(dmarc: str | None, *, signed: bool) -> tuple[Action, list[str], dict[str, str]]:
    checks = make_checks(
        forwarded_zone(dmarc),
        greylist=GreylistSettings(exempt_networks=("203.0.113.0/24",)),
    )

    async def go() -> tuple[Action, list[str], dict[str, str]]:
        inbound = await transaction(checks, FORWARDER_IP, "carol@author.test")
        assert not (await inbound.recipient("bob@example.test")).refused
        done = await inbound.message(message("carol@author.test", signed=signed))
        inbound.close()
        if done.refused:
            return done.verdict.action, done.verdict.reasons, {}
        ar_value = done.headers.decode().partition("Authentication-Results: ")[2]
        found = {r.method: r.result for r in parse_authentication_results(ar_value).results}
        return done.verdict.action, done.verdict.reasons, found

    return run(go())


def test_forwarded_mail_passing_dmarc_through_dkim_is_accepted() -> None:
    action, reasons, found = deliver("v=DMARC1; p=quarantine", signed=True)
    assert action is Action.ACCEPT
    assert found == {"spf": "fail", "dkim": "pass", "dmarc": "pass"}
    assert reasons[0] == (
        "spf: SPF fail for author.test ignored: DMARC passed via aligned DKIM (d=author.test)"
        " -> accept"
    )


def test_forwarded_mail_signed_by_a_domain_without_dmarc_is_accepted() -> None:
    action, reasons, _ = deliver(None, signed=True)
    assert action is Action.ACCEPT
    assert reasons[0].endswith("(d=author.test; no DMARC record) -> accept")


def test_unsigned_forwarded_mail_is_junk_or_refused_by_the_policy() -> None:
    assert deliver(None, signed=False)[0] is Action.JUNK
    assert deliver("v=DMARC1; p=quarantine", signed=False)[0] is Action.JUNK
    assert deliver("v=DMARC1; p=reject", signed=False)[0] is Action.REJECT
