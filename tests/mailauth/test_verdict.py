"""The verdict policy: default actions, precedence, report-only mode, log fields, headers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import DmarcRecord, DmarcResult
from poczta.mailauth.dnsbl import DnsblKind, DnsblStatus, DnsblZone, ZoneResult
from poczta.mailauth.greylist import (
    GreylistDecision,
    Greylister,
    GreylistOutcome,
    GreylistSettings,
    GreylistTriplet,
    MemoryGreylistStore,
)
from poczta.mailauth.results import (
    REGISTERED_METHODS,
    format_authentication_results,
    parse_authentication_results,
)
from poczta.mailauth.spf import SpfResult, SpfResultCode
from poczta.mailauth.verdict import (
    Action,
    CheckResults,
    Decider,
    PolicySettings,
    Verdict,
    decide,
    reply_text,
)

ZEN = DnsblZone("zen.example.net")
DBL = DnsblZone("dbl.example.net", kind=DnsblKind.DOMAIN, action="junk")


def spf(code: SpfResultCode, **kw: Any) -> SpfResult:
    return SpfResult(code, "example.org", "alice@example.org", **kw)


def dmarc(result: str, disposition: str = "none", policy: str = "reject", **kw: Any) -> DmarcResult:
    record = DmarcRecord(policy=policy) if kw.pop("record", True) else None
    return DmarcResult(result, policy, disposition, "example.org", "example.org", record, **kw)


def listed(zone: DnsblZone = ZEN, subject: str = "192.0.2.99", reason: str = "") -> ZoneResult:
    return ZoneResult(zone, DnsblStatus.LISTED, subject, "q", ("127.0.0.2",), reason)


def verdict(policy: PolicySettings | None = None, **checks: Any) -> Verdict:
    return decide(CheckResults(**checks), policy)


def test_nothing_found_is_accept() -> None:
    v = verdict()
    assert (v.action, v.enforced, v.code, v.enhanced, v.text) == (
        Action.ACCEPT,
        Action.ACCEPT,
        250,
        "2.0.0",
        "OK",
    )
    assert v.reasons == [] and v.resinfos() == []


def test_all_pass_is_accept() -> None:
    v = verdict(
        spf=spf(SpfResultCode.PASS),
        dkim=(DkimResult(DkimStatus.PASS, domain="example.org", selector="s"),),
        dmarc=dmarc("pass"),
        dnsbl=(ZoneResult(ZEN, DnsblStatus.PASS, "192.0.2.99"),),
        greylist=GreylistDecision(GreylistOutcome.WHITELISTED, "triplet whitelisted"),
    )
    assert v.action is Action.ACCEPT and v.enforced is Action.ACCEPT
    assert v.reasons == [  # only the results that have no Authentication-Results method
        "dnsbl=pass policy.zone=zen.example.net",
        'greylist=whitelisted reason="triplet whitelisted"',
    ]


def test_dmarc_reject() -> None:
    v = verdict(dmarc=dmarc("fail", "reject"))
    assert (v.action, v.code, v.enhanced) == (Action.REJECT, 550, "5.7.1")
    assert v.text == "Message rejected per DMARC policy of example.org"
    assert v.decided_by == ("dmarc",)
    assert v.reasons == ["dmarc: DMARC fail for example.org, disposition reject -> reject"]


def test_dmarc_quarantine_is_junk_and_fail_with_p_none_is_nothing() -> None:
    v = verdict(dmarc=dmarc("fail", "quarantine", "quarantine"))
    assert v.action is Action.JUNK and v.code == 250
    assert verdict(dmarc=dmarc("fail", "none", "none")).action is Action.ACCEPT


def test_spf_fail_junk_softfail_nothing() -> None:
    assert verdict(spf=spf(SpfResultCode.FAIL)).action is Action.JUNK
    assert verdict(spf=spf(SpfResultCode.SOFTFAIL)).action is Action.ACCEPT
    assert verdict(spf=spf(SpfResultCode.NEUTRAL)).action is Action.ACCEPT


def test_spf_fail_can_be_made_to_reject() -> None:
    policy = PolicySettings(spf_fail="reject")
    v = verdict(policy, spf=spf(SpfResultCode.FAIL, explanation="not allowed"))
    assert (v.action, v.code, v.enhanced) == (Action.REJECT, 550, "5.7.23")
    assert v.text == "SPF check failed for example.org: not allowed"


def test_dnsbl_listing_uses_the_zone_action_and_text() -> None:
    v = verdict(dnsbl=(listed(reason="see https://zen.example.net"),))
    assert (v.action, v.code, v.enhanced) == (Action.REJECT, 554, "5.7.1")
    assert (
        v.text
        == "Client host [192.0.2.99] blocked using zen.example.net; see https://zen.example.net"
    )
    junk = verdict(dnsbl=(listed(DBL, "spam.example"),))
    assert junk.action is Action.JUNK


def test_dnsbl_temperror_and_permerror_do_nothing_by_default() -> None:
    results = (
        ZoneResult(ZEN, DnsblStatus.TEMPERROR, "192.0.2.99", detail="timeout"),
        ZoneResult(DBL, DnsblStatus.PERMERROR, "x.example", detail="refused"),
    )
    assert verdict(dnsbl=results).action is Action.ACCEPT
    v = verdict(PolicySettings(dnsbl_temperror="defer"), dnsbl=results)
    assert (v.action, v.code, v.enhanced) == (Action.DEFER, 451, "4.7.1")


def test_dkim_fail_alone_is_nothing() -> None:
    v = verdict(dkim=(DkimResult(DkimStatus.FAIL, domain="example.org"),))
    assert v.action is Action.ACCEPT
    v = verdict(PolicySettings(dkim_fail="junk"), dkim=(DkimResult(DkimStatus.FAIL, domain="x"),))
    assert v.action is Action.JUNK and "no DKIM signature passed (x)" in v.reasons[0]


def test_dmarc_temperror_defers_only_when_the_policy_matters() -> None:
    unknown = dmarc("temperror", record=False, reason="DNS: timeout")
    v = verdict(dmarc=unknown)
    assert (v.action, v.code, v.enhanced) == (Action.DEFER, 451, "4.7.1")
    assert "try again later" in v.text
    assert verdict(dmarc=dmarc("temperror", policy="reject")).action is Action.DEFER
    assert verdict(dmarc=dmarc("temperror", policy="none")).action is Action.ACCEPT
    lenient = PolicySettings(dmarc_reject="accept", dmarc_quarantine="accept")
    assert verdict(lenient, dmarc=unknown).action is Action.ACCEPT


def test_spf_and_dkim_temperror_defer_only_if_configured_and_relevant() -> None:
    temp = spf(SpfResultCode.TEMPERROR, problem="timeout")
    assert verdict(spf=temp).action is Action.ACCEPT
    v = verdict(PolicySettings(spf_temperror="defer"), spf=temp)
    assert (v.action, v.code, v.enhanced) == (Action.DEFER, 451, "4.7.24")
    relevant_not = PolicySettings(spf_temperror="defer", spf_fail="accept")
    assert verdict(relevant_not, spf=temp).action is Action.ACCEPT
    dkim_temp = (DkimResult(DkimStatus.TEMPERROR, domain="example.org"),)
    assert verdict(PolicySettings(dkim_temperror="defer"), dkim=dkim_temp).action is Action.ACCEPT
    both = PolicySettings(dkim_temperror="defer", dkim_fail="junk")
    assert verdict(both, dkim=dkim_temp).action is Action.DEFER


def test_dmarc_bad_from_rejects_and_bad_record_does_not() -> None:
    bad_from = DmarcResult("permerror", disposition="reject", reason="2 From header fields")
    v = verdict(dmarc=bad_from)
    assert v.action is Action.REJECT and v.text == "Message rejected: 2 From header fields"
    assert verdict(dmarc=dmarc("permerror", reason="no valid p=")).action is Action.ACCEPT


def test_greylist_defer() -> None:
    triplet = GreylistTriplet("192.0.2.0/24", "", "bob@example.test")
    grey = GreylistDecision(GreylistOutcome.DEFER, "first seen", 300, triplet)
    v = verdict(greylist=grey)
    assert (v.action, v.code, v.enhanced) == (Action.DEFER, 451, "4.7.1")
    assert v.text == "Greylisted, please try again in 300 seconds"


def test_strictest_action_wins_and_its_first_check_gives_the_reply() -> None:
    grey = GreylistDecision(GreylistOutcome.DEFER, "first seen", 300)
    v = verdict(
        spf=spf(SpfResultCode.FAIL),
        dmarc=dmarc("fail", "reject"),
        dnsbl=(listed(DBL, "spam.example"), listed()),
        greylist=grey,
    )
    assert v.enforced is Action.REJECT and v.code == 554
    assert v.decided_by == ("dnsbl", "dmarc")
    assert len([r for r in v.reasons if " -> " in r]) == 5
    deferred = verdict(spf=spf(SpfResultCode.FAIL), greylist=grey)
    assert deferred.action is Action.DEFER  # defer beats junk: the retry decides


def test_report_only_accepts_but_records_the_would_be_action() -> None:
    policy = PolicySettings(report_only=True)
    v = verdict(policy, dmarc=dmarc("fail", "reject"), spf=spf(SpfResultCode.FAIL))
    assert v.action is Action.ACCEPT and v.enforced is Action.REJECT and v.report_only
    assert (v.code, v.enhanced, v.text) == (250, "2.0.0", "OK")
    assert len(v.reasons) == 2
    fields = v.log_fields()
    assert fields["action"] == "accept" and fields["enforced"] == "reject"
    assert fields["report_only"] is True
    assert "DMARC fail" in str(fields["reasons"])


def test_log_fields_name_every_check() -> None:
    v = verdict(
        spf=spf(SpfResultCode.SOFTFAIL),
        dkim=(),
        dmarc=dmarc("fail", "quarantine", "quarantine"),
        dnsbl=(listed(), ZoneResult(DBL, DnsblStatus.PASS)),
        greylist=GreylistDecision(GreylistOutcome.PASS, "retried after the delay"),
    )
    fields = v.log_fields()
    assert fields["spf"] == "softfail" and fields["spf_domain"] == "example.org"
    assert fields["dkim"] == "none"
    assert fields["dmarc"] == "fail" and fields["dmarc_disposition"] == "quarantine"
    assert fields["dnsbl"] == "zen.example.net=listed(192.0.2.99:127.0.0.2) dbl.example.net=pass"
    assert fields["greylist"] == "pass"
    assert fields["action"] == "reject" and fields["code"] == 554
    assert all(isinstance(value, str | int | bool) for value in fields.values())


def test_resinfos_render_and_parse_back() -> None:
    v = verdict(
        spf=spf(SpfResultCode.PASS),
        dkim=(DkimResult(DkimStatus.PASS, domain="example.org", selector="s1", signature_b="abc"),),
        dmarc=dmarc("pass"),
        dnsbl=(listed(),),
        greylist=GreylistDecision(GreylistOutcome.EXEMPT, "authenticated as example.org"),
    )
    infos = v.resinfos()
    assert [i.method for i in infos] == ["spf", "dkim", "dmarc"]
    assert infos[0].get("smtp.mailfrom") == "alice@example.org"
    parsed = parse_authentication_results(format_authentication_results("mx.example.test", infos))
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]
    helo = SpfResult(SpfResultCode.NONE, "client.example", "postmaster@client.example", "helo")
    assert verdict(spf=helo).resinfos()[0].get("smtp.helo") == "client.example"


def test_unregistered_methods_go_to_the_reasons_not_authentication_results() -> None:
    v = verdict(
        spf=spf(SpfResultCode.PASS),
        dnsbl=(listed(), ZoneResult(DBL, DnsblStatus.PASS, "example.org")),
        greylist=GreylistDecision(GreylistOutcome.PASS, "retried after the delay"),
    )
    value = format_authentication_results("mx.example.test", v.resinfos())
    assert "greylist" not in value and "dnsbl" not in value
    methods = {r.method for r in parse_authentication_results(value).results}
    assert methods == {"spf"} and methods <= REGISTERED_METHODS
    assert "dnsbl" not in REGISTERED_METHODS and "greylist" not in REGISTERED_METHODS
    assert v.reasons[-3:] == [
        "dnsbl=listed (127.0.0.2) policy.zone=zen.example.net policy.ip=192.0.2.99",
        "dnsbl=pass policy.zone=dbl.example.net",
        'greylist=pass reason="retried after the delay"',
    ]
    recorded = parse_authentication_results("x; " + "; ".join(v.reasons[-3:])).results
    assert [(r.method, r.result) for r in recorded] == [
        ("dnsbl", "listed"), ("dnsbl", "pass"), ("greylist", "pass"),
    ]  # fmt: skip
    assert recorded[2].reason == "retried after the delay"


def test_quoted_texts_cannot_break_the_reply_line() -> None:
    policy = PolicySettings(spf_fail="reject")
    v = verdict(
        policy, spf=spf(SpfResultCode.FAIL, explanation="no\r\n250 OK\x00 żółw " + "x" * 400)
    )
    assert v.text.isascii() and v.text.isprintable() and len(v.text) <= 300
    assert v.text.startswith("SPF check failed for example.org: no  250 OK? ???w x")
    assert reply_text("fine text") == "fine text"


def test_policy_values_are_validated() -> None:
    with pytest.raises(ValueError):
        PolicySettings(spf_fail="discard")
    assert PolicySettings().action("dmarc_reject") is Action.REJECT


_ACTIONS = st.sampled_from([a.value for a in Action])
_POLICIES = st.builds(
    PolicySettings,
    report_only=st.booleans(),
    dmarc_reject=_ACTIONS,
    dmarc_quarantine=_ACTIONS,
    dmarc_temperror=_ACTIONS,
    dmarc_bad_from=_ACTIONS,
    spf_fail=_ACTIONS,
    spf_temperror=_ACTIONS,
    dkim_fail=_ACTIONS,
    dkim_temperror=_ACTIONS,
    dnsbl_temperror=_ACTIONS,
)
_TEXT = st.text(max_size=30)
_CHECKS = st.builds(
    CheckResults,
    spf=st.none() | st.builds(SpfResult, st.sampled_from(list(SpfResultCode)), _TEXT, _TEXT),
    dkim=st.none()
    | st.lists(
        st.builds(DkimResult, st.sampled_from(list(DkimStatus)), domain=_TEXT), max_size=3
    ).map(tuple),
    dmarc=st.none()
    | st.builds(
        DmarcResult,
        st.sampled_from(["pass", "fail", "none", "temperror", "permerror", "odd"]),
        st.sampled_from(["none", "quarantine", "reject", "odd"]),
        st.sampled_from(["none", "quarantine", "reject", "odd"]),
        _TEXT,
    ),
    dnsbl=st.lists(
        st.builds(
            ZoneResult,
            st.sampled_from([ZEN, DBL]),
            st.sampled_from(list(DnsblStatus)),
            _TEXT,
            codes=st.just(("127.0.0.2",)),
            reason=_TEXT,
        ),
        max_size=3,
    ).map(tuple),
    greylist=st.none()
    | st.builds(GreylistDecision, st.sampled_from(list(GreylistOutcome)), _TEXT, st.integers(0, 9)),
)


@settings(max_examples=300, deadline=None)
@given(checks=_CHECKS, policy=_POLICIES)
def test_any_combination_gives_a_consistent_verdict(
    checks: CheckResults, policy: PolicySettings
) -> None:
    v = decide(checks, policy)
    assert v.action in Action and v.enforced in Action
    if policy.report_only:
        assert v.action is Action.ACCEPT
    else:
        assert v.action is v.enforced
    if v.action is Action.REJECT:
        assert 500 <= v.code < 600 and v.enhanced.startswith("5.")
    elif v.action is Action.DEFER:
        assert 400 <= v.code < 500 and v.enhanced.startswith("4.")
    else:
        assert v.code == 250
    acting = [r for r in v.reasons if " -> " in r and not r.endswith(" -> accept")]
    assert (v.enforced is Action.ACCEPT) == (not acting)
    assert all(i.method in REGISTERED_METHODS for i in v.resinfos())
    assert v.text.isascii() and v.text.isprintable()
    v.log_fields()
    format_authentication_results("mx.example.test", v.resinfos())


# --- SPF against aligned DKIM: forwarded mail and mailing lists ----------------------------

SIGNED = (DkimResult(DkimStatus.PASS, domain="example.org", selector="s1"),)


def forwarded(result: str = "pass", **kw: Any) -> DmarcResult:
    """The DMARC result of example.org's mail resent by a forwarder: SPF failed."""
    kw.setdefault("policy", "quarantine")
    return dmarc(result, dkim_aligned=result == "pass", **kw)


def test_spf_fail_is_ignored_when_dmarc_passes_via_aligned_dkim() -> None:
    v = verdict(spf=spf(SpfResultCode.FAIL), dkim=SIGNED, dmarc=forwarded())
    assert (v.action, v.enforced, v.code, v.decided_by) == (Action.ACCEPT, Action.ACCEPT, 250, ())
    assert v.reasons == [
        "spf: SPF fail for example.org ignored: DMARC passed via aligned DKIM (d=example.org)"
        " -> accept"
    ]
    assert v.log_fields()["reasons"] == v.reasons[0]


def test_spf_fail_is_ignored_for_aligned_dkim_when_the_domain_has_no_usable_dmarc_record() -> None:
    sub = (DkimResult(DkimStatus.PASS, domain="mail.example.org", selector="s1"),)
    for found, record in (("none", "no DMARC record"), ("permerror", "DMARC record unusable")):
        v = verdict(spf=spf(SpfResultCode.FAIL), dkim=sub, dmarc=dmarc(found, record=False))
        assert v.action is Action.ACCEPT and v.enforced is Action.ACCEPT
        assert v.reasons == [
            "spf: SPF fail for example.org ignored: DKIM aligned with the From domain passed"
            f" (d=mail.example.org; {record}) -> accept"
        ]


@pytest.mark.parametrize(
    "signatures",
    [
        (),  # unsigned
        (DkimResult(DkimStatus.FAIL, domain="example.org"),),  # broken by the forwarder
        (DkimResult(DkimStatus.PASS, domain="bulk-sender.example"),),  # not the author's
        (DkimResult(DkimStatus.PASS, domain="example.org", body_length_limited=True),),
    ],
)
def test_spf_fail_counts_without_an_aligned_dkim_pass(signatures: tuple[DkimResult, ...]) -> None:
    v = verdict(spf=spf(SpfResultCode.FAIL), dkim=signatures, dmarc=dmarc("none", record=False))
    assert v.action is Action.JUNK
    assert v.reasons == ["spf: SPF fail for example.org -> junk"]


def test_spf_fail_with_dmarc_fail_applies_the_dmarc_policy_and_spf() -> None:
    failing = DkimResult(DkimStatus.FAIL, domain="example.org")
    quarantine = verdict(
        spf=spf(SpfResultCode.FAIL),
        dkim=(failing,),
        dmarc=forwarded("fail", disposition="quarantine"),
    )
    assert quarantine.action is Action.JUNK and quarantine.decided_by == ("dmarc", "spf")
    reject = verdict(
        spf=spf(SpfResultCode.FAIL),
        dkim=(failing,),
        dmarc=forwarded("fail", disposition="reject", policy="reject"),
    )
    assert (reject.action, reject.code, reject.decided_by) == (Action.REJECT, 550, ("dmarc",))
    p_none = verdict(spf=spf(SpfResultCode.FAIL), dkim=(), dmarc=forwarded("fail", policy="none"))
    assert p_none.action is Action.JUNK and p_none.decided_by == ("spf",)
    # strict DKIM alignment (adkim=s): a subdomain's signature does not pass DMARC
    strict = DmarcResult("fail", "quarantine", "quarantine", "example.org", "example.org",
                         DmarcRecord(policy="quarantine", adkim="s"))  # fmt: skip
    sub = (DkimResult(DkimStatus.PASS, domain="mail.example.org"),)
    assert verdict(spf=spf(SpfResultCode.FAIL), dkim=sub, dmarc=strict).action is Action.JUNK


def test_other_spf_outcomes_made_to_count_are_ignored_too_when_dmarc_passes() -> None:
    strict = PolicySettings(spf_softfail="junk", spf_permerror="reject", spf_temperror="defer")
    for code in (SpfResultCode.SOFTFAIL, SpfResultCode.PERMERROR, SpfResultCode.TEMPERROR):
        alone = verdict(strict, spf=spf(code, problem="x"))
        assert alone.action is not Action.ACCEPT
        v = verdict(strict, spf=spf(code, problem="x"), dkim=SIGNED, dmarc=forwarded())
        assert v.action is Action.ACCEPT and v.code == 250
        assert v.reasons[0].startswith(f"spf: SPF {code.value} for example.org ignored: DMARC")


def test_spf_pass_with_dmarc_pass_says_nothing_more() -> None:
    v = verdict(spf=spf(SpfResultCode.PASS), dkim=SIGNED, dmarc=forwarded())
    assert v.action is Action.ACCEPT and v.reasons == []


# --- what the client sees ---------------------------------------------------------------------

EXEMPT = ("10.0.0.0/8", "198.51.100.0/24", "2001:db8:77::/48")


def test_reply_texts_name_no_configured_network_zone_or_internal_detail() -> None:
    async def greylisted(ip: str) -> GreylistDecision:
        settings = GreylistSettings(exempt_networks=EXEMPT, trusted_domains=("example.org",))
        return await Greylister(MemoryGreylistStore(), settings, lambda: 1e9).check(
            ip, "alice@example.org", "bob@example.test"
        )

    strict = PolicySettings(
        spf_fail="reject", spf_permerror="reject", spf_temperror="defer",
        dnsbl_temperror="defer", dkim_fail="reject", dkim_temperror="defer",
    )  # fmt: skip
    secret = "no answer within 20 seconds"
    verdicts = [
        verdict(strict, greylist=asyncio.run(greylisted("192.0.2.10"))),
        verdict(strict, greylist=asyncio.run(greylisted("10.1.2.3"))),
        verdict(strict, dnsbl=(ZoneResult(ZEN, DnsblStatus.TEMPERROR, "10.1.2.3", detail=secret),)),
        verdict(strict, spf=spf(SpfResultCode.PERMERROR, problem=secret)),
        verdict(strict, spf=spf(SpfResultCode.FAIL, problem=secret)),
        verdict(strict, spf=spf(SpfResultCode.TEMPERROR, problem=secret)),
        verdict(strict, dkim=(DkimResult(DkimStatus.FAIL, "x.example", reason=secret),)),
        verdict(strict, dkim=(DkimResult(DkimStatus.TEMPERROR, "x.example", reason=secret),)),
        verdict(strict, dmarc=dmarc("temperror", reason=secret)),
    ]
    assert [v.code // 100 for v in verdicts] == [4, 2, 4, 5, 5, 4, 5, 4, 4]
    for v in verdicts:
        assert not any(net in v.text for net in EXEMPT), v.text
        assert secret not in v.text and "zen.example.net" not in v.text, v.text
        assert not any(net in r for net in EXEMPT for r in v.reasons)
    assert verdicts[2].text == "Blocklist lookup failed temporarily, try again later"
    assert verdicts[3].text == "SPF check failed for example.org"
    assert any(secret in r for r in verdicts[2].reasons)  # the detail stays for the log
    assert any("10.1.2.3 in an exempt network" in r for r in verdicts[1].reasons)


def test_decider_shares_one_verdict_per_distinct_results() -> None:
    decider = Decider(PolicySettings(spf_fail="junk"), max_entries=2)
    failing = CheckResults(spf=spf(SpfResultCode.FAIL))
    first = decider(failing)
    again = decider(CheckResults(spf=spf(SpfResultCode.FAIL)))  # equal, not the same object
    assert again is first
    assert first == decide(failing, PolicySettings(spf_fail="junk"))
    assert first.action is Action.JUNK
    assert decider(CheckResults(spf=spf(SpfResultCode.PASS))).action is Action.ACCEPT


def test_decider_memory_is_bounded() -> None:
    decider = Decider(max_entries=2)
    results = [CheckResults(dnsbl=(listed(subject=f"192.0.2.{i}"),)) for i in range(5)]
    verdicts = [decider(r) for r in results]
    assert len(decider._verdicts) <= 2
    assert [v.reasons for v in verdicts] == [decide(r).reasons for r in results]


def test_shared_verdict_log_fields_and_resinfos_are_copies() -> None:
    v = verdict(spf=spf(SpfResultCode.PASS), dmarc=dmarc("pass"))
    fields = v.log_fields()
    fields["action"] = "changed"
    infos = v.resinfos()
    infos.clear()
    assert v.log_fields()["action"] == "accept"
    assert [i.method for i in v.resinfos()] == ["spf", "dmarc"]
