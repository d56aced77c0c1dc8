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

Nothing here raises because of DNS: each background lookup, the store's greylisting
answer and the end-of-DATA stage as a whole are bounded by `deadline`, and a check that
fails or times out is a temperror, which the policy turns into its action. (The
X-Poczta-Verdict field itself is written and read in `verdict_header`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from poczta.dns import AnswerTrail, DerivedCache, DnsPythonResolver, Resolver
from poczta.mailauth.dkim import DkimResult, DkimStatus, verify_dkim
from poczta.mailauth.dmarc import (
    DmarcResult,
    FromHeaderError,
    PolicyRecords,
    author_domain,
    check_dmarc,
    discover_policy,
    from_header_values,
    load_public_suffix_list,
)
from poczta.mailauth.dnsbl import DnsblKind, DnsblStatus, DnsblZone, ZoneResult, check_dnsbl
from poczta.mailauth.greylist import GreylistDecision, Greylister, GreylistOutcome, verified_domains
from poczta.mailauth.results import authentication_results_header
from poczta.mailauth.spf import SpfResult, SpfResultCode, check_spf
from poczta.mailauth.verdict import Action, CheckResults, Decider, PolicySettings, Verdict
from poczta.message.header import HeaderSection, split_header
from poczta.smtp.verdict_header import (
    VERDICT_HEADER,
    parse_verdict_header,
    verdict_header,
    without_our_claims,
)

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

OFFLOAD_SIZE = 256 * 1024  # messages larger than this are hashed on a thread
_REFUSING = (Action.REJECT, Action.DEFER)


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
    connection. `zones` are the blocklists, `greylister` None turns greylisting off.

    Blocklist answers, SPF results and DMARC policy records are kept in `DerivedCache`s
    (with a resolver that can follow its answers, `DnsPythonResolver`): while the DNS
    answers they came from are cached unchanged, and for at most `result_ttl` seconds,
    the next message from the same client, sender or author domain reuses them instead
    of working them out again.
    """

    resolver: Resolver
    authserv_id: str
    policy: PolicySettings = field(default_factory=PolicySettings)
    zones: Sequence[DnsblZone] = ()
    greylister: Greylister | None = None
    deadline: float = 20.0
    clock: Callable[[], float] = time.time
    result_ttl: float = 60.0
    max_results: int = 10_000

    def __post_init__(self) -> None:
        self.spf_results: DerivedCache[tuple[str, str, str], SpfResult] = DerivedCache(
            self.max_results, ttl=self.result_ttl
        )
        self.dnsbl_results: DerivedCache[tuple[str, ...], list[ZoneResult]] = DerivedCache(
            self.max_results, ttl=self.result_ttl
        )
        self.dmarc_policies: DerivedCache[str, PolicyRecords] = DerivedCache(
            self.max_results, ttl=self.result_ttl
        )
        self.decide = Decider(self.policy)
        self._headers: dict[int, tuple[Verdict, bytes]] = {}
        load_public_suffix_list()  # now, rather than on the event loop with the first message

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

    def verdict_headers(self, verdict: Verdict) -> bytes:
        """Our X-Poczta-Verdict and Authentication-Results fields for `verdict`, worked
        out once for each verdict `decide` shares."""
        # Keyed by identity: the entry keeps its verdict alive, so the id is not reused.
        found = self._headers.get(id(verdict))
        if found is not None and found[0] is verdict:
            return found[1]
        headers = self._render_headers(verdict)
        if len(self._headers) >= self.decide.max_entries:
            self._headers.clear()
        self._headers[id(verdict)] = (verdict, headers)
        return headers

    def _render_headers(self, verdict: Verdict) -> bytes:
        return verdict_header(verdict) + authentication_results_header(
            self.authserv_id, verdict.resinfos()
        )

    def answer_trail(self) -> AnswerTrail | None:
        """A resolver view recording the answers a check uses, when results can be cached."""
        if isinstance(self.resolver, DnsPythonResolver) and self.result_ttl > 0:
            return self.resolver.tracking()
        return None

    async def dmarc_policy(self, resolver: Resolver, domain: str) -> PolicyRecords:
        """`discover_policy` for `domain`, from the cache while its DNS answers live."""
        cached = self.dmarc_policies.get(domain)
        if cached is not None:
            return cached
        trail = self.answer_trail()
        found = await discover_policy(trail if trail is not None else resolver, domain)
        if trail is not None:
            self.dmarc_policies.put(domain, found, trail)
        return found

    async def bounded(self, work: Awaitable[T], fallback: Callable[[str], T]) -> T:
        """`work`'s result, or `fallback(why)` when it takes longer than `deadline` or
        fails: a check never raises into the session."""
        try:
            async with asyncio.timeout(self.deadline):  # no extra task, unlike wait_for
                return await work
        except TimeoutError:
            return fallback(self.too_slow)
        except Exception as exc:  # defensive: a broken check is a temperror, not a crash
            return fallback(f"internal error: {type(exc).__name__}")

    @property
    def too_slow(self) -> str:
        return f"no answer within {self.deadline:g} seconds"


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


# A check's result, or the task working it out (a cached result needs no task).
_Pending: TypeAlias = "asyncio.Task[T] | T"


async def _settled(pending: _Pending[T]) -> T:
    return await pending if isinstance(pending, asyncio.Task) else pending


class _DataStage:
    """The results of the end-of-DATA checks, filled in as they finish under one deadline."""

    def __init__(self) -> None:
        self.dkim: list[DkimResult] | None = None
        self.dnsbl: list[ZoneResult] | None = None
        self.dmarc: DmarcResult | None = None


class InboundChecks:
    """The checks of one connection: started at connect, MAIL FROM and RCPT, finished at
    the end of DATA. `close` cancels whatever is still running."""

    def __init__(self, checks: MailChecks, client_ip: str) -> None:
        self.checks = checks
        self.client_ip = client_ip
        self.sender = ""
        self.helo = ""
        self._ip_dnsbl: _Pending[list[ZoneResult]] | None = None
        self._domain_dnsbl: _Pending[list[ZoneResult]] | None = None
        self._spf: _Pending[SpfResult] | None = None
        self._greylist: list[GreylistDecision] = []
        zones = checks.ip_zones
        if zones:
            self._ip_dnsbl = self._zones_pending(zones, ("ip", client_ip), client_ip=client_ip)

    def _start(self, work: Awaitable[T]) -> asyncio.Task[T]:
        async def run() -> T:
            return await work

        return asyncio.get_running_loop().create_task(run())

    def _zones_pending(
        self,
        zones: Sequence[DnsblZone],
        key: tuple[str, ...],
        *,
        client_ip: str | None = None,
        domains: Sequence[str] = (),
    ) -> _Pending[list[ZoneResult]]:
        cached = self.checks.dnsbl_results.get(key)
        if cached is not None:
            return cached
        return self._start(self._ask_zones(zones, key, client_ip=client_ip, domains=domains))

    async def _ask_zones(
        self,
        zones: Sequence[DnsblZone],
        key: tuple[str, ...],
        *,
        client_ip: str | None = None,
        domains: Sequence[str] = (),
    ) -> list[ZoneResult]:
        checks = self.checks
        trail = checks.answer_trail()
        resolver = trail if trail is not None else checks.resolver
        work = check_dnsbl(resolver, zones, client_ip=client_ip, domains=domains)
        results = await checks.bounded(work, _zone_temperrors(zones))
        if trail is not None and all(r.status is not DnsblStatus.TEMPERROR for r in results):
            checks.dnsbl_results.put(key, results, trail)
        return results

    def mail_from(self, sender: str, helo: str) -> None:
        """A new transaction: start SPF and the domain blocklist lookups."""
        self._cancel(self._spf, self._domain_dnsbl)
        self.sender, self.helo = sender, helo
        self._greylist = []
        spf = self.checks.spf_results.get((self.client_ip, sender, helo))
        self._spf = spf if spf is not None else self._start(self._check_spf())
        zones = self.checks.domain_zones
        domains = [d for d in (_domain_of(sender), helo) if d]
        key = ("domain", *domains)
        self._domain_dnsbl = self._zones_pending(zones, key, domains=domains) if zones else None

    async def _check_spf(self) -> SpfResult:
        identity = "mailfrom" if self.sender else "helo"
        domain = _domain_of(self.sender) if self.sender else self.helo
        sender = self.sender or f"postmaster@{self.helo}"
        key = (self.client_ip, self.sender, self.helo)

        def temperror(why: str) -> SpfResult:
            return SpfResult(SpfResultCode.TEMPERROR, domain, sender, identity, problem=why)

        checks = self.checks
        trail = checks.answer_trail()
        work = check_spf(
            self.client_ip,
            self.sender,
            self.helo,
            trail if trail is not None else checks.resolver,
            receiver=checks.authserv_id,
        )
        result = await checks.bounded(work, temperror)
        # A temperror is worth asking again; a fail's explanation may hold the time (%{t}).
        if trail is not None and result.result not in (SpfResultCode.TEMPERROR, SpfResultCode.FAIL):
            checks.spf_results.put(key, result, trail)
        return result

    async def _dnsbl_so_far(self) -> list[ZoneResult]:
        ip, domain = self._ip_dnsbl, self._domain_dnsbl
        if domain is None:
            return [] if ip is None else list(await _settled(ip))
        if ip is None:
            return list(await _settled(domain))
        return _merge_zone_results(await _settled(ip), await _settled(domain))

    async def recipient(self, address: str) -> CheckDecision:
        """Blocklists, then greylisting, for one (local, existing) recipient."""
        decide = self.checks.decide
        dnsbl = await self._dnsbl_so_far()
        greylister = self.checks.greylister
        # Only a blocklist that did not simply pass can refuse before greylisting.
        if greylister is None or any(r.status is not DnsblStatus.PASS for r in dnsbl):
            verdict = decide(CheckResults(dnsbl=tuple(dnsbl)))
            if verdict.action in _REFUSING or greylister is None:
                return CheckDecision(verdict, "rcpt")
        greylist = await self._greylist_check(greylister, address)
        verdict = decide(CheckResults(dnsbl=tuple(dnsbl), greylist=greylist))
        if verdict.action not in _REFUSING:
            self._greylist.append(greylist)
        return CheckDecision(verdict, "rcpt")

    async def _greylist_check(self, greylister: Greylister, address: str) -> GreylistDecision:
        verified: tuple[str, ...] = ()
        if greylister.settings.trusted_domains and self._spf is not None:
            spf = await _settled(self._spf)
            verified = verified_domains((spf.result.value, spf.domain), ())
        known = greylister.known(self.client_ip, self.sender, address, verified=verified)
        if known is not None:  # no store to wait for, so no deadline either
            return known
        work = greylister.check(self.client_ip, self.sender, address, verified=verified)

        def unavailable(why: str) -> GreylistDecision:
            return GreylistDecision(GreylistOutcome.EXEMPT, f"greylisting unavailable: {why}")

        return await self.checks.bounded(work, unavailable)

    async def message(self, data: bytes, header: HeaderSection | None = None) -> CheckDecision:
        """DKIM, the From domain's blocklist entries and DMARC, then the verdict.

        `header` is the header section of `data` (split here when not given). The hashing
        of a large message runs on a thread, so that the event loop goes on serving other
        connections meanwhile. The three share one deadline; what has not finished by
        then is a temperror.
        """
        checks = self.checks
        header = header if header is not None else split_header(data)
        spf = await _settled(self._spf) if self._spf is not None else None
        dnsbl = await self._dnsbl_so_far()
        authors = from_header_values(header)  # split once, for the blocklists and DMARC
        from_domain = self._from_domain_to_ask(authors)
        found = _DataStage()
        why = checks.too_slow
        try:
            async with asyncio.timeout(checks.deadline):
                await self._data_checks(data, header, authors, spf, from_domain, found)
        except TimeoutError:
            pass
        except Exception as exc:  # defensive: a broken check is a temperror, not a crash
            why = f"internal error: {type(exc).__name__}"
        dkim = found.dkim if found.dkim is not None else _dkim_temperror(why)
        dmarc = found.dmarc if found.dmarc is not None else _dmarc_temperror(authors, why)
        if from_domain is not None:
            from_dnsbl = found.dnsbl
            if from_dnsbl is None:
                from_dnsbl = _zone_temperrors(checks.domain_zones)(why)
            dnsbl = _merge_zone_results(dnsbl, from_dnsbl)
        greylist = next((g for g in self._greylist if g.deferred), None)
        if greylist is None and self._greylist:
            greylist = self._greylist[0]
        results = CheckResults(spf, tuple(dkim), dmarc, tuple(dnsbl), greylist)
        verdict = checks.decide(results)
        if verdict.action in _REFUSING:
            return CheckDecision(verdict, "data")
        stripped, stripped_header = without_our_claims(data, header, checks.authserv_id)
        headers = checks.verdict_headers(verdict)
        return CheckDecision(verdict, "data", headers, stripped, stripped_header)

    async def _data_checks(
        self,
        data: bytes,
        header: HeaderSection,
        authors: list[str],
        spf: SpfResult | None,
        from_domain: str | None,
        found: _DataStage,
    ) -> None:
        """DKIM, then the From domain's blocklist entries, then DMARC, into `found`."""
        resolver = self.checks.resolver
        offload = asyncio.to_thread if len(data) > OFFLOAD_SIZE else None
        found.dkim = await _guarded(
            verify_dkim(data, resolver, header=header, offload=offload), _dkim_temperror
        )
        if from_domain is not None:
            found.dnsbl = await self._from_domain_zones(from_domain)
        spf_pair = (spf.result.value, spf.domain) if spf is not None else None
        found.dmarc = await _guarded(
            check_dmarc(authors, spf_pair, found.dkim, resolver, discover=self.checks.dmarc_policy),
            lambda why: _dmarc_temperror(authors, why),
        )

    def _from_domain_to_ask(self, authors: list[str]) -> str | None:
        """The From domain (of the From field values `authors`), when the domain blocklists
        have not been asked about it yet."""
        if not self.checks.domain_zones:
            return None
        try:
            from_domain = author_domain(authors)
        except FromHeaderError:
            return None
        if from_domain in (_domain_of(self.sender).lower(), self.helo.lower()):
            return None
        return from_domain

    async def _from_domain_zones(self, from_domain: str) -> list[ZoneResult]:
        zones = self.checks.domain_zones
        key = ("domain", from_domain)
        cached = self.checks.dnsbl_results.get(key)
        if cached is not None:
            return cached
        return await self._ask_zones(zones, key, domains=[from_domain])

    @staticmethod
    def _cancel(*pending: _Pending[object] | None) -> None:
        for task in pending:
            if isinstance(task, asyncio.Task) and not task.done():
                task.cancel()

    def close(self) -> None:
        """Cancel the lookups still running (the connection is gone)."""
        self._cancel(self._ip_dnsbl, self._domain_dnsbl, self._spf)


async def _guarded(work: Awaitable[T], fallback: Callable[[str], T]) -> T:
    """`work`'s result, or `fallback(why)` when it fails (a deadline is the caller's)."""
    try:
        return await work
    except Exception as exc:  # defensive: a broken check is a temperror, not a crash
        return fallback(f"internal error: {type(exc).__name__}")


def _dkim_temperror(why: str) -> list[DkimResult]:
    return [DkimResult(DkimStatus.TEMPERROR, reason=why)]


def _dmarc_temperror(authors: list[str], why: str) -> DmarcResult:
    domain = ""
    with contextlib.suppress(FromHeaderError):
        domain = author_domain(authors)
    return DmarcResult("temperror", from_domain=domain, reason=why)
