"""`poczta why`: the report read back from the header fields the checks wrote."""

from __future__ import annotations

from poczta.cli.why import recorded_checks, report_lines
from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import DmarcRecord, DmarcResult
from poczta.mailauth.dnsbl import DnsblStatus, DnsblZone, ZoneResult
from poczta.mailauth.greylist import GreylistDecision, GreylistOutcome
from poczta.mailauth.results import authentication_results_header
from poczta.mailauth.spf import SpfResult, SpfResultCode
from poczta.mailauth.verdict import CheckResults, decide
from poczta.smtp.checks import verdict_header

HOST = "mx.example.test"


def stored_forwarded_message() -> bytes:
    """A forwarded message as the checks store it: SPF failed, DMARC passed by DKIM."""
    dmarc = DmarcResult("pass", "quarantine", "none", "example.org", "example.org",
                        DmarcRecord(policy="quarantine"), dkim_aligned=True)  # fmt: skip
    results = CheckResults(
        spf=SpfResult(SpfResultCode.FAIL, "example.org", "alice@example.org"),
        dkim=(DkimResult(DkimStatus.PASS, domain="example.org", selector="s1"),),
        dmarc=dmarc,
        dnsbl=(ZoneResult(DnsblZone("bl.example"), DnsblStatus.PASS, "192.0.2.1"),),
        greylist=GreylistDecision(GreylistOutcome.PASS, "retried after the delay"),
    )
    verdict = decide(results)
    headers = verdict_header(verdict) + authentication_results_header(HOST, verdict.resinfos())
    return headers + b"From: <alice@example.org>\r\nSubject: hi\r\n\r\nHello.\r\n"


def test_why_shows_the_set_aside_spf_fail_and_the_greylist_result() -> None:
    record = recorded_checks(stored_forwarded_message(), HOST)
    assert record is not None
    assert [(c["method"], c["result"]) for c in record["checks"]] == [
        ("spf", "fail"), ("dkim", "pass"), ("dmarc", "pass"), ("dnsbl", "pass"),
        ("greylist", "pass"),
    ]  # fmt: skip
    override = "DMARC passed via aligned DKIM (d=example.org)"
    assert record["checks"][0]["ignored"] == override
    assert record["checks"][4]["reason"] == "retried after the delay"
    lines = report_lines("uid 1 in INBOX of bob@example.test", HOST, record)
    assert lines[1:4] == [
        "verdict: accept (policy asked for accept)",
        "reasons:",
        f"  spf: SPF fail for example.org ignored: {override} -> accept",
    ]
    spf = f"  spf       fail       smtp.mailfrom=alice@example.org [ignored: {override}]"
    assert lines[5] == spf
    assert lines[-2:] == [
        "  dnsbl     pass       policy.zone=bl.example",
        "  greylist  pass       (retried after the delay)",
    ]
