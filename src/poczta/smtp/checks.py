"""The checks of incoming mail in the order an SMTP transaction allows them: `MailChecks`.

`MailChecks` owns the resolver, the policy, the blocklists and the greylister; for each
connection on the MX listener the session asks it for an `InboundChecks` and tells that
what happens:

- at connect, the client address is looked up in the IP blocklists (in the background);
- at MAIL FROM, SPF for the sender (HELO for the null sender) and the domain blocklists
  for the MAIL FROM and HELO domains start in the background;
- at each RCPT, the blocklist answers are awaited (a listing refuses the recipient with
  554), then greylisting decides (451 for a new triplet);
- at the end of DATA, DKIM, the From domain's blocklist entries and DMARC are checked
  and `decide` gives the verdict. The message to store comes back with our
  Authentication-Results and X-Poczta-Verdict header fields, after any incoming ones
  that claim our name have been removed.

Nothing here raises because of DNS: every check is bounded by `deadline` and a check
that fails or times out is a temperror, which the policy turns into its action.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from poczta.dns import Resolver
from poczta.mailauth.dkim import DkimResult, DkimStatus, verify_dkim
from poczta.mailauth.dmarc import (
    DmarcResult,
    FromHeaderError,
    author_domain,
    check_dmarc,
    from_header_values,
)
from poczta.mailauth.dnsbl import DnsblKind, DnsblStatus, DnsblZone, ZoneResult, check_dnsbl
from poczta.mailauth.greylist import GreylistDecision, Greylister, GreylistOutcome, verified_domains
from poczta.mailauth.results import authentication_results_header, claims_authserv_id
from poczta.mailauth.spf import SpfResult, SpfResultCode, check_spf
from poczta.mailauth.verdict import Action, CheckResults, PolicySettings, Verdict, decide
from poczta.message.header import HeaderSection, split_header

__all__ = [
    "VERDICT_HEADER",
    "CheckDecision",
    "InboundChecks",
    "MailChecks",
    "parse_verdict_header",
    "verdict_header",
    "without_our_claims",
]

T = TypeVar("T")

VERDICT_HEADER = "X-Poczta-Verdict"
OFFLOAD_SIZE = 256 * 1024  # messages larger than this are hashed on a thread
_REFUSING = (Action.REJECT, Action.DEFER)
_MAX_REASONS = 800


@dataclass(frozen=True)
class CheckDecision:
    """What the checks decided at one step: the verdict and, at the end of DATA, the
    header fields to prepend and the message to store (incoming forgeries removed)."""

    verdict: Verdict
    stage: str  # "rcpt" or "data"
    headers: bytes = b""
    data: bytes = b""
    header: HeaderSection | None = None  # the header section of `data`

    @property
    def refused(self) -> bool:
        """Reject or defer: answer with the verdict's code instead of accepting."""
        return self.verdict.action in _REFUSING

    @property
    def junk(self) -> bool:
        return self.verdict.action is Action.JUNK


@dataclass
class MailChecks:
    """Everything the checks share: one per server, handing out one `InboundChecks` per
    connection. `zones` are the blocklists, `greylister` None turns greylisting off."""

    resolver: Resolver
    authserv_id: str
    policy: PolicySettings = field(default_factory=PolicySettings)
    zones: Sequence[DnsblZone] = ()
    greylister: Greylister | None = None
    deadline: float = 20.0
    clock: Callable[[], float] = time.time

    def connect(self, client_ip: str) -> InboundChecks:
        """The checks of one new connection; starts the IP blocklist lookups (call it from
        inside the running event loop)."""
        return InboundChecks(self, client_ip)

    @property
    def ip_zones(self) -> list[DnsblZone]:
        return [z for z in self.zones if z.kind is DnsblKind.IP]

    @property
    def domain_zones(self) -> list[DnsblZone]:
        return [z for z in self.zones if z.kind is DnsblKind.DOMAIN]

    async def bounded(self, work: Awaitable[T], fallback: Callable[[str], T]) -> T:
        """`work`'s result, or `fallback(why)` when it takes longer than `deadline` or
        fails: a check never raises into the session."""
        try:
            async with asyncio.timeout(self.deadline):  # no extra task, unlike wait_for
                return await work
        except TimeoutError:
            return fallback(f"no answer within {self.deadline:g} seconds")
        except Exception as exc:  # defensive: a broken check is a temperror, not a crash
            return fallback(f"internal error: {type(exc).__name__}")


def _zone_temperrors(zones: Sequence[DnsblZone]) -> Callable[[str], list[ZoneResult]]:
    return lambda why: [ZoneResult(z, DnsblStatus.TEMPERROR, detail=why) for z in zones]


_RANK = {DnsblStatus.LISTED: 0, DnsblStatus.TEMPERROR: 1, DnsblStatus.PERMERROR: 2}


def _merge_zone_results(*groups: Sequence[ZoneResult]) -> list[ZoneResult]:
    """One result per zone: a listing wins, then a temperror, then a permerror, then pass."""
    chosen: dict[str, ZoneResult] = {}
    for group in groups:
        for result in group:
            old = chosen.get(result.zone.name)
            if old is None or _RANK.get(result.status, 3) < _RANK.get(old.status, 3):
                chosen[result.zone.name] = result
    return list(chosen.values())


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


class InboundChecks:
    """The checks of one connection: started at connect, MAIL FROM and RCPT, finished at
    the end of DATA. `close` cancels whatever is still running."""

    def __init__(self, checks: MailChecks, client_ip: str) -> None:
        self.checks = checks
        self.client_ip = client_ip
        self.sender = ""
        self.helo = ""
        self._ip_dnsbl: asyncio.Task[list[ZoneResult]] | None = None
        self._domain_dnsbl: asyncio.Task[list[ZoneResult]] | None = None
        self._spf: asyncio.Task[SpfResult] | None = None
        self._greylist: list[GreylistDecision] = []
        if checks.ip_zones:
            self._ip_dnsbl = self._start(self._ask_zones(checks.ip_zones, client_ip=client_ip))

    def _start(self, work: Awaitable[T]) -> asyncio.Task[T]:
        async def run() -> T:
            return await work

        return asyncio.get_running_loop().create_task(run())

    async def _ask_zones(
        self,
        zones: Sequence[DnsblZone],
        *,
        client_ip: str | None = None,
        domains: Sequence[str] = (),
    ) -> list[ZoneResult]:
        work = check_dnsbl(self.checks.resolver, zones, client_ip=client_ip, domains=domains)
        return await self.checks.bounded(work, _zone_temperrors(zones))

    def mail_from(self, sender: str, helo: str) -> None:
        """A new transaction: start SPF and the domain blocklist lookups."""
        self._cancel(self._spf, self._domain_dnsbl)
        self.sender, self.helo = sender, helo
        self._greylist = []
        self._spf = self._start(self._check_spf())
        zones = self.checks.domain_zones
        domains = [d for d in (_domain_of(sender), helo) if d]
        self._domain_dnsbl = self._start(self._ask_zones(zones, domains=domains)) if zones else None

    async def _check_spf(self) -> SpfResult:
        identity = "mailfrom" if self.sender else "helo"
        domain = _domain_of(self.sender) if self.sender else self.helo
        sender = self.sender or f"postmaster@{self.helo}"

        def temperror(why: str) -> SpfResult:
            return SpfResult(SpfResultCode.TEMPERROR, domain, sender, identity, problem=why)

        work = check_spf(
            self.client_ip,
            self.sender,
            self.helo,
            self.checks.resolver,
            receiver=self.checks.authserv_id,
        )
        return await self.checks.bounded(work, temperror)

    async def _dnsbl_so_far(self) -> list[ZoneResult]:
        found: list[list[ZoneResult]] = []
        for task in (self._ip_dnsbl, self._domain_dnsbl):
            if task is not None:
                found.append(await task)
        return _merge_zone_results(*found)

    async def recipient(self, address: str) -> CheckDecision:
        """Blocklists, then greylisting, for one (local, existing) recipient."""
        policy = self.checks.policy
        dnsbl = await self._dnsbl_so_far()
        greylister = self.checks.greylister
        # Only a blocklist that did not simply pass can refuse before greylisting.
        if greylister is None or any(r.status is not DnsblStatus.PASS for r in dnsbl):
            verdict = decide(CheckResults(dnsbl=tuple(dnsbl)), policy)
            if verdict.action in _REFUSING or greylister is None:
                return CheckDecision(verdict, "rcpt")
        greylist = await self._greylist_check(greylister, address)
        verdict = decide(CheckResults(dnsbl=tuple(dnsbl), greylist=greylist), policy)
        if verdict.action not in _REFUSING:
            self._greylist.append(greylist)
        return CheckDecision(verdict, "rcpt")

    async def _greylist_check(self, greylister: Greylister, address: str) -> GreylistDecision:
        verified: tuple[str, ...] = ()
        if greylister.settings.trusted_domains and self._spf is not None:
            spf = await self._spf
            verified = verified_domains((spf.result.value, spf.domain), ())
        work = greylister.check(self.client_ip, self.sender, address, verified=verified)

        def unavailable(why: str) -> GreylistDecision:
            return GreylistDecision(GreylistOutcome.EXEMPT, f"greylisting unavailable: {why}")

        return await self.checks.bounded(work, unavailable)

    async def message(self, data: bytes, header: HeaderSection | None = None) -> CheckDecision:
        """DKIM, the From domain's blocklist entries and DMARC, then the verdict.

        `header` is the header section of `data` (split here when not given). The hashing
        of a large message runs on a thread, so that the event loop goes on serving other
        connections meanwhile.
        """
        checks = self.checks
        header = header if header is not None else split_header(data)
        spf = await self._spf if self._spf is not None else None
        offload = asyncio.to_thread if len(data) > OFFLOAD_SIZE else None
        work_dkim = verify_dkim(data, checks.resolver, header=header, offload=offload)
        dkim = await checks.bounded(work_dkim, _dkim_temperror)
        dnsbl = await self._dnsbl_with_from(header)
        spf_pair = (spf.result.value, spf.domain) if spf is not None else None
        work = check_dmarc(header, spf_pair, dkim, checks.resolver)
        dmarc = await checks.bounded(work, lambda why: _dmarc_temperror(header, why))
        greylist = next((g for g in self._greylist if g.deferred), None)
        if greylist is None and self._greylist:
            greylist = self._greylist[0]
        results = CheckResults(spf, tuple(dkim), dmarc, tuple(dnsbl), greylist)
        verdict = decide(results, checks.policy)
        if verdict.action in _REFUSING:
            return CheckDecision(verdict, "data")
        stripped, stripped_header = without_our_claims(data, header, checks.authserv_id)
        headers = verdict_header(verdict) + authentication_results_header(
            checks.authserv_id, verdict.resinfos()
        )
        return CheckDecision(verdict, "data", headers, stripped, stripped_header)

    async def _dnsbl_with_from(self, header: HeaderSection) -> list[ZoneResult]:
        so_far = await self._dnsbl_so_far()
        zones = self.checks.domain_zones
        try:
            from_domain = author_domain(from_header_values(header))
        except FromHeaderError:
            return so_far
        if not zones or from_domain in (_domain_of(self.sender).lower(), self.helo.lower()):
            return so_far
        return _merge_zone_results(so_far, await self._ask_zones(zones, domains=[from_domain]))

    @staticmethod
    def _cancel(*tasks: asyncio.Task[object] | asyncio.Task[SpfResult] | None) -> None:
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()

    def close(self) -> None:
        """Cancel the lookups still running (the connection is gone)."""
        self._cancel(self._ip_dnsbl, self._domain_dnsbl, self._spf)


def _dkim_temperror(why: str) -> list[DkimResult]:
    return [DkimResult(DkimStatus.TEMPERROR, reason=why)]


def _dmarc_temperror(header: HeaderSection, why: str) -> DmarcResult:
    domain = ""
    with contextlib.suppress(FromHeaderError):
        domain = author_domain(from_header_values(header))
    return DmarcResult("temperror", from_domain=domain, reason=why)


# --- the verdict header field ------------------------------------------------------------

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_PARAM = re.compile(r'\s*;\s*([A-Za-z][A-Za-z0-9-]*)=("(?:[^"\\]|\\.)*"|[^;\s]*)')


def _quoted(text: str) -> str:
    text = _UNPRINTABLE.sub("?", text)
    if len(text) > _MAX_REASONS:
        text = text[: _MAX_REASONS - 3] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def verdict_header(verdict: Verdict) -> bytes:
    """``X-Poczta-Verdict: ACTION; enforced=...; report-only=yes|no; by=...; reasons="..."``"""
    parts = [
        verdict.action.value,
        f"enforced={verdict.enforced.value}",
        f"report-only={'yes' if verdict.report_only else 'no'}",
    ]
    if verdict.decided_by:
        parts.append("by=" + ",".join(verdict.decided_by))
    parts.append("reasons=" + _quoted(" | ".join(verdict.reasons) or "none"))
    value = ";\r\n\t".join(parts)
    return f"{VERDICT_HEADER}: {value}\r\n".encode("ascii")


def parse_verdict_header(value: str) -> dict[str, str]:
    """The action and the parameters of an X-Poczta-Verdict value (unfolded or not)."""
    value = re.sub(r"\r?\n[ \t]", " ", value).strip()
    action, _, rest = value.partition(";")
    out = {"action": action.strip()}
    for match in _PARAM.finditer(";" + rest):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[match.group(1).lower()] = raw
    return out


def without_our_claims(
    data: bytes, header: HeaderSection, authserv_id: str
) -> tuple[bytes, HeaderSection]:
    """`data` without the fields that claim to be our checks' results: X-Poczta-Verdict
    and Authentication-Results naming `authserv_id`. For mail from anywhere, including
    our own users: only the checks write them."""
    verdict_key = VERDICT_HEADER.lower()
    return header.without(
        data, lambda f: f.key == verdict_key or claims_authserv_id(f, authserv_id)
    )
