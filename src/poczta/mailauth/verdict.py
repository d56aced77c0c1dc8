"""The verdict on an incoming message: every check's outcome combined into one action by policy.

Pure. `decide` takes what the checks found (`CheckResults`: DNS blocklists, SPF, DKIM,
DMARC, greylisting) and a `PolicySettings`, and returns a `Verdict`: accept, junk
(deliver to the Junk mailbox), defer (4xx, try again) or reject (5xx), with the reply to
send and every reason. Each outcome maps to an action through the policy; the
strictest action wins (reject, then defer, then junk, then accept), and the reply comes
from the first check that asked for it, in the order blocklists, DMARC, SPF, DKIM,
greylisting.

SPF against DKIM and DMARC. Forwarders and mailing lists resend mail from their own
addresses, so SPF fails for the original sender while the author's DKIM signature
still verifies. SPF's result (fail, softfail, temperror, permerror) therefore moves
nothing when the From domain is authenticated by a passing DKIM signature aligned
with it; the reasons say so ("SPF fail for ... ignored: DMARC passed via aligned DKIM
(d=...)"). In detail:

- DMARC pass (which, SPF having failed, means an aligned DKIM pass): SPF is ignored.
- DMARC none (no record) or permerror (unusable record) with a DKIM pass aligned
  (relaxed) with the From domain: SPF is ignored too. The signature authenticates the
  author exactly as it would under DMARC, and demanding a record would gain nothing:
  whoever controls the domain can publish ``p=none``.
- DMARC fail: the DMARC policy governs (``p=reject`` rejects, ``p=quarantine`` files in
  Junk), and SPF's own action still applies, the strictest winning: with ``p=none``
  an SPF fail still goes to Junk.
- DMARC temperror: handled as below (a deferral unless the policy cannot matter);
  SPF's action applies as configured.
- No aligned DKIM pass (unsigned, broken, or signed by another domain): SPF's action
  applies as configured (by default fail is Junk, softfail nothing).
- A DKIM signature that covers only part of the body (``l=``) authenticates nothing
  here, as in DMARC.

Client-visible reply texts name only what the client sent or can look up itself (its
address, its domains, a listing blocklist and that list's reason); configured
networks, exemptions and what went wrong inside stay in the reasons, which go to the
log and to `poczta why`.

A temporary DNS failure defers only where the check's answer would have mattered: a
DMARC temperror defers unless the domain's known policy is ``p=none`` (or the policy's
actions are all "accept"); an SPF or DKIM temperror defers only if configured to and if
a failure of that check would do something.

In report-only mode every action becomes accept; the verdict still records the action
the policy called for (`enforced`) and the reasons, so a new policy can be watched in the
logs before it refuses anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import lru_cache

from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import DmarcResult, aligned
from poczta.mailauth.dnsbl import DnsblKind, DnsblStatus, ZoneResult
from poczta.mailauth.greylist import GreylistDecision
from poczta.mailauth.results import (
    ResInfo,
    dkim_resinfos,
    dmarc_resinfo,
    format_resinfo,
    spf_resinfo,
)
from poczta.mailauth.spf import SpfResult, SpfResultCode

__all__ = ["Action", "CheckResults", "Decider", "PolicySettings", "Verdict", "decide", "reply_text"]


class Action(StrEnum):
    ACCEPT = "accept"
    JUNK = "junk"
    DEFER = "defer"
    REJECT = "reject"


_SEVERITY = {Action.ACCEPT: 0, Action.JUNK: 1, Action.DEFER: 2, Action.REJECT: 3}


@dataclass(frozen=True)
class PolicySettings:
    """What each outcome does: every field but `report_only` is an `Action` value."""

    report_only: bool = False
    dmarc_reject: str = "reject"  # DMARC fail, disposition reject (p=reject)
    dmarc_quarantine: str = "junk"  # DMARC fail, disposition quarantine
    dmarc_temperror: str = "defer"
    dmarc_bad_from: str = "reject"  # From header missing, repeated or without one address
    dmarc_permerror: str = "accept"  # unusable DMARC record
    spf_fail: str = "junk"
    spf_softfail: str = "accept"
    spf_temperror: str = "accept"
    spf_permerror: str = "accept"
    dkim_fail: str = "accept"  # signatures present, none passed, no temperror
    dkim_temperror: str = "accept"
    dnsbl_temperror: str = "accept"  # a listed zone acts by its own `action`

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "report_only" and value not in Action.__members__.values():
                raise ValueError(f"{f.name}: not an action: {value!r}")

    def action(self, name: str) -> Action:
        return Action(getattr(self, name))


@dataclass(frozen=True)
class CheckResults:
    """What the checks found; None (or empty) for a check that did not run."""

    spf: SpfResult | None = None
    dkim: tuple[DkimResult, ...] | None = None  # () for an unsigned message
    dmarc: DmarcResult | None = None
    dnsbl: tuple[ZoneResult, ...] = ()
    greylist: GreylistDecision | None = None


@dataclass(frozen=True)
class _Finding:
    check: str
    action: Action
    reason: str
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "OK"
    note: bool = False  # an accept worth a reason: a check's action set aside


_ACCEPTED = _Finding("policy", Action.ACCEPT, "")
_UNSAFE = re.compile(r"[^\x20-\x7e]")
MAX_REPLY_TEXT = 300


def reply_text(text: str) -> str:
    """`text` made safe for an SMTP reply line: printable ASCII only, bounded in length.

    Reply texts quote what others wrote (SPF explanations, blocklist TXT records), so
    nothing in them may end the line or smuggle in a second reply."""
    safe = _UNSAFE.sub("?", text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    return safe if len(safe) <= MAX_REPLY_TEXT else safe[: MAX_REPLY_TEXT - 3] + "..."


def _reply(
    action: Action,
    rejected: tuple[int, str],
    deferred: tuple[int, str],
    text: str,
    check: str,
    reason: str,
) -> _Finding:
    if action is Action.REJECT:
        return _Finding(check, action, reason, rejected[0], rejected[1], reply_text(text))
    if action is Action.DEFER:
        return _Finding(check, action, reason, deferred[0], deferred[1], reply_text(text))
    return _Finding(check, action, reason)


def _dnsbl_findings(results: Sequence[ZoneResult], policy: PolicySettings) -> list[_Finding]:
    out = []
    for r in results:
        if r.status is DnsblStatus.LISTED:
            action = Action(r.action or "reject")
            why = f"{r.subject} listed in {r.zone.name} ({', '.join(r.codes)})"
            out.append(_reply(action, (554, "5.7.1"), (451, "4.7.1"), r.reply_text, "dnsbl", why))
        elif r.status is DnsblStatus.TEMPERROR:
            action = policy.action("dnsbl_temperror")
            text = "Blocklist lookup failed temporarily, try again later"
            why = f"{r.zone.name} lookup failed: {r.detail}"
            out.append(_reply(action, (550, "5.7.1"), (451, "4.7.1"), text, "dnsbl", why))
    return out


def _matters(policy: PolicySettings, *names: str) -> bool:
    """Whether a definite result would have done something: a temperror only defers then."""
    return any(policy.action(n) is not Action.ACCEPT for n in names)


def _dmarc_finding(result: DmarcResult, policy: PolicySettings) -> _Finding | None:
    domain = result.from_domain
    if result.result == "fail" and result.disposition in ("reject", "quarantine"):
        action = policy.action(f"dmarc_{result.disposition}")
        text = f"Message rejected per DMARC policy of {domain}"
        why = f"DMARC fail for {domain}, disposition {result.disposition}"
        return _reply(action, (550, "5.7.1"), (451, "4.7.1"), text, "dmarc", why)
    if result.result == "temperror":
        if result.record is None:
            relevant: tuple[str, ...] = ("dmarc_reject", "dmarc_quarantine")
        else:
            relevant = {
                "reject": ("dmarc_reject", "dmarc_quarantine"),
                "quarantine": ("dmarc_quarantine",),
            }.get(result.policy, ())
        if not _matters(policy, *relevant):
            return None
        action = policy.action("dmarc_temperror")
        text = f"DMARC policy of {domain or 'the sender'} could not be checked, try again later"
        why = f"DMARC temperror: {result.reason}"
        return _reply(action, (550, "5.7.1"), (451, "4.7.1"), text, "dmarc", why)
    if result.result == "permerror":
        name = "dmarc_bad_from" if result.disposition == "reject" else "dmarc_permerror"
        action = policy.action(name)
        text = f"Message rejected: {result.reason or 'DMARC permanent error'}"
        why = f"DMARC permerror: {result.reason}"
        return _reply(action, (550, "5.7.1"), (451, "4.7.1"), text, "dmarc", why)
    return None


def _spf_finding(
    result: SpfResult, policy: PolicySettings, authenticated: str | None
) -> _Finding | None:
    code = result.result
    if code not in (
        SpfResultCode.FAIL,
        SpfResultCode.SOFTFAIL,
        SpfResultCode.TEMPERROR,
        SpfResultCode.PERMERROR,
    ):
        return None
    if code is SpfResultCode.TEMPERROR and not _matters(policy, "spf_fail"):
        return None
    action = policy.action(f"spf_{code.value}")
    if action is not Action.ACCEPT and authenticated is not None:
        why = f"SPF {code.value} for {result.domain} ignored: {authenticated}"
        return _Finding("spf", Action.ACCEPT, why, note=True)
    detail = result.explanation or result.problem or ""
    why = f"SPF {code.value} for {result.domain}" + (f": {detail}" if detail else "")
    if code is SpfResultCode.TEMPERROR:
        text = f"SPF check for {result.domain} failed temporarily, try again later"
    else:  # the explanation is the sender domain's own text for its senders (RFC 7208 6.2)
        exp = result.explanation if code is SpfResultCode.FAIL else None
        text = f"SPF check failed for {result.domain}" + (f": {exp}" if exp else "")
    return _reply(action, (550, "5.7.23"), (451, "4.7.24"), text, "spf", why)


def _aligned_signers(dkim: Sequence[DkimResult], from_domain: str, mode: str) -> str:
    domains = [
        s.domain
        for s in dkim
        if s.status is DkimStatus.PASS
        and not s.body_length_limited
        and aligned(s.domain, from_domain, mode)
    ]
    return ", ".join(f"d={d}" for d in dict.fromkeys(domains))


def _dkim_authenticated(results: CheckResults) -> str | None:
    """Why SPF's outcome does not count: the From domain is authenticated by an aligned
    DKIM pass (DMARC passed through one, or no usable record says otherwise); else None."""
    dmarc, dkim = results.dmarc, results.dkim or ()
    if dmarc is None or not dmarc.from_domain:
        return None
    if dmarc.result == "pass":
        if not dmarc.dkim_aligned:
            return None
        mode = dmarc.record.adkim if dmarc.record is not None else "r"
        signers = _aligned_signers(dkim, dmarc.from_domain, mode)
        return "DMARC passed via aligned DKIM" + (f" ({signers})" if signers else "")
    if dmarc.result in ("none", "permerror"):
        signers = _aligned_signers(dkim, dmarc.from_domain, "r")
        if signers:
            record = "no DMARC record" if dmarc.result == "none" else "DMARC record unusable"
            return f"DKIM aligned with the From domain passed ({signers}; {record})"
    return None


def _dkim_finding(results: Sequence[DkimResult], policy: PolicySettings) -> _Finding | None:
    statuses = {r.status for r in results}
    if not results or DkimStatus.PASS in statuses:
        return None
    if DkimStatus.TEMPERROR in statuses:
        if not _matters(policy, "dkim_fail"):
            return None
        action = policy.action("dkim_temperror")
        text = "DKIM key lookup failed temporarily, try again later"
        return _reply(action, (550, "5.7.20"), (451, "4.7.5"), text, "dkim", "DKIM temperror")
    domains = ", ".join(sorted({r.domain for r in results if r.domain})) or "unknown domain"
    action = policy.action("dkim_fail")
    text = "No valid DKIM signature"
    why = f"no DKIM signature passed ({domains})"
    return _reply(action, (550, "5.7.20"), (451, "4.7.5"), text, "dkim", why)


def _greylist_finding(decision: GreylistDecision) -> _Finding | None:
    if not decision.deferred:
        return None
    why = f"greylisted: {decision.reason}"
    return _Finding("greylist", Action.DEFER, why, decision.code, decision.enhanced, decision.text)


def _findings(results: CheckResults, policy: PolicySettings) -> list[_Finding]:
    out = _dnsbl_findings(results.dnsbl, policy)
    candidates = [
        _dmarc_finding(results.dmarc, policy) if results.dmarc is not None else None,
        _spf_finding(results.spf, policy, _dkim_authenticated(results))
        if results.spf is not None
        else None,
        _dkim_finding(results.dkim, policy) if results.dkim is not None else None,
        _greylist_finding(results.greylist) if results.greylist is not None else None,
    ]
    out.extend(f for f in candidates if f is not None)
    return out


@dataclass(frozen=True)
class Verdict:
    """The decision: the action, the SMTP reply for defer/reject, and why.

    For accept and junk, `code`/`enhanced`/`text` are a plain 250 OK; the message is
    delivered (to Junk for junk). `enforced` is the action the policy called for; it
    differs from `action` only in report-only mode.
    """

    action: Action
    code: int
    enhanced: str
    text: str
    reasons: list[str]
    results: CheckResults
    enforced: Action
    report_only: bool = False
    decided_by: tuple[str, ...] = field(default=())  # checks that asked for `enforced`

    def log_fields(self) -> dict[str, str | int | bool]:
        """One flat dict for the structured log line: the action, the reasons and every
        check's result. (Worked out once per verdict, which `Decider` shares.)"""
        fields: dict[str, str | int | bool] | None = self.__dict__.get("_log_fields")
        if fields is None:
            fields = {
                "action": self.action.value,
                "enforced": self.enforced.value,
                "report_only": self.report_only,
                "code": self.code,
                "enhanced": self.enhanced,
                "reasons": "; ".join(self.reasons) or "none",
            }
            fields.update(_check_fields(self.results))
            object.__setattr__(self, "_log_fields", fields)
        return dict(fields)

    def resinfos(self) -> list[ResInfo]:
        """The Authentication-Results entries of the checks that ran and have a registered
        method (RFC 8601 section 2.7: spf, dkim, dmarc). The others (dnsbl, greylist)
        are at the end of `reasons`, in the same syntax."""
        infos: list[ResInfo] | None = self.__dict__.get("_resinfos")
        if infos is None:
            infos = _resinfos(self.results)
            object.__setattr__(self, "_resinfos", infos)
        return list(infos)


def decide(results: CheckResults, policy: PolicySettings | None = None) -> Verdict:
    """Combine the checks' outcomes into one `Verdict` by `policy`.

    `reasons` name each check that asked for an action (``check: why -> action``), each
    action set aside (``-> accept``), then the results of the checks that have no
    registered Authentication-Results method, as resinfos (``greylist=pass ...``)."""
    policy = policy or PolicySettings()
    found = [f for f in _findings(results, policy) if f.note or f.action is not Action.ACCEPT]
    findings = [f for f in found if not f.note]
    enforced = max((f.action for f in findings), key=_SEVERITY.__getitem__, default=Action.ACCEPT)
    deciding = [f for f in findings if f.action is enforced]
    reasons = [f"{f.check}: {f.reason} -> {f.action.value}" for f in found]
    reasons += [_zone_reason(zone) for zone in results.dnsbl]
    if results.greylist is not None:
        greylist = results.greylist
        reasons.append(_greylist_reason(greylist.outcome.value, greylist.reason))
    reply = deciding[0] if deciding else _ACCEPTED
    if policy.report_only or enforced in (Action.ACCEPT, Action.JUNK):
        reply = _ACCEPTED
    action = Action.ACCEPT if policy.report_only else enforced
    return Verdict(
        action=action,
        code=reply.code,
        enhanced=reply.enhanced,
        text=reply.text,
        reasons=reasons,
        results=results,
        enforced=enforced,
        report_only=policy.report_only,
        decided_by=tuple(dict.fromkeys(f.check for f in deciding)),
    )


class Decider:
    """`decide` by one policy, remembered for each distinct `CheckResults`.

    Much mail repeats its results exactly (the same client, sender, authors and
    signatures), and a verdict depends on nothing else, so each distinct set is decided
    once; the verdicts handed out are shared and must not be changed. At most
    `max_entries` are kept: the memory is emptied when it is full, which costs less
    than ordering it by use."""

    def __init__(self, policy: PolicySettings | None = None, max_entries: int = 4096) -> None:
        self.policy = policy or PolicySettings()
        self.max_entries = max_entries
        self._verdicts: dict[CheckResults, Verdict] = {}

    def __call__(self, results: CheckResults) -> Verdict:
        verdict = self._verdicts.get(results)
        if verdict is None:
            verdict = decide(results, self.policy)
            if len(self._verdicts) >= self.max_entries:
                self._verdicts.clear()
            self._verdicts[results] = verdict
        return verdict


# --- logging and Authentication-Results ---------------------------------------------------


def _check_fields(results: CheckResults) -> dict[str, str | int | bool]:
    out: dict[str, str | int | bool] = {}
    if results.spf is not None:
        out["spf"] = results.spf.result.value
        out["spf_domain"] = results.spf.domain
        if results.spf.problem:
            out["spf_problem"] = results.spf.problem
    if results.dkim is not None:
        sigs = [f"{r.status.value}:{r.domain or '?'}" for r in results.dkim]
        out["dkim"] = " ".join(sigs) or "none"
    if results.dmarc is not None:
        d = results.dmarc
        out["dmarc"] = d.result
        out["dmarc_from"] = d.from_domain
        out["dmarc_policy"] = d.policy
        out["dmarc_disposition"] = d.disposition
    if results.dnsbl:
        out["dnsbl"] = " ".join(_zone_field(r) for r in results.dnsbl)
    if results.greylist is not None:
        out["greylist"] = results.greylist.outcome.value
        out["greylist_reason"] = results.greylist.reason
    return out


def _zone_field(result: ZoneResult) -> str:
    text = f"{result.zone.name}={result.status.value}"
    if result.codes:
        text += f"({result.subject}:{','.join(result.codes)})"
    return text


def _resinfos(results: CheckResults) -> list[ResInfo]:
    infos: list[ResInfo] = []
    spf = results.spf
    if spf is not None:
        reason = spf.problem or ""
        if spf.identity == "helo":
            infos.append(spf_resinfo(spf.result.value, helo=spf.domain, reason=reason))
        else:
            infos.append(spf_resinfo(spf.result.value, mailfrom=spf.sender, reason=reason))
    if results.dkim is not None:
        infos.extend(dkim_resinfos(results.dkim))
    if results.dmarc is not None:
        infos.append(dmarc_resinfo(results.dmarc))
    return infos


# The reasons that record the checks without an Authentication-Results method: the same
# few on most messages, so each is formatted once.


@lru_cache(maxsize=4096)
def _zone_reason(zone: ZoneResult) -> str:
    props = [("policy.zone", zone.zone.name)]
    if zone.listed:
        kind = "ip" if zone.zone.kind is DnsblKind.IP else "domain"
        props.append((f"policy.{kind}", zone.subject))
    comment = ",".join(zone.codes)
    return format_resinfo(ResInfo("dnsbl", zone.status.value, "", tuple(props), comment))


@lru_cache(maxsize=1024)
def _greylist_reason(outcome: str, reason: str) -> str:
    return format_resinfo(ResInfo("greylist", outcome, reason))
