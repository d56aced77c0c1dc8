"""DMARC evaluation (RFC 7489): policy discovery, identifier alignment, result and disposition.

Pure: takes the message's From header field(s), the SPF and DKIM outcomes and a
`Resolver`. The result is one of:

- ``none``: no DMARC record for the From domain nor its organizational domain;
- ``pass``: an SPF pass or a DKIM pass whose domain is aligned with the From domain;
- ``fail``: a record exists and nothing passed aligned; `disposition` is the policy to
  apply (after ``pct`` sampling: an unsampled ``reject`` becomes ``quarantine``, an
  unsampled ``quarantine`` becomes ``none``);
- ``temperror``: the record lookup failed, or nothing passed but an aligned SPF or DKIM
  check ended in temperror (try again later rather than apply the policy);
- ``permerror``: the From header field is unusable (missing, repeated, or not exactly one
  address with a domain; RFC 7489 section 6.6.1) -- `disposition` is then ``reject``,
  since no policy can protect such a message -- or the record is invalid (``v=DMARC1``
  with no usable ``p=`` and no valid ``rua=``; `disposition` ``none``).

DKIM signatures whose ``l=`` left part of the body unsigned do not count as aligned
passes unless `accept_body_length_limited` is set. Keys in testing mode (``t=y``) count.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from poczta.dns import DnsError, NXDomain, Resolver
from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.message.addresses import strict_addresses
from poczta.message.header import HeaderSection, split_header


@dataclass(frozen=True)
class SpfOutcome:
    """The SPF result as DMARC needs it: the result word and the domain it was for
    (the MAIL FROM domain, or the HELO name when the reverse-path was null)."""

    result: str
    domain: str


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p=: none / quarantine / reject
    subdomain_policy: str | None = None  # sp=
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    raw: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass / fail / none / temperror / permerror
    policy: str = "none"  # the published policy that applies (p= or sp=)
    disposition: str = "none"  # what to do: none / quarantine / reject
    from_domain: str = ""
    org_domain: str = ""
    record: DmarcRecord | None = None
    reason: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False


class DmarcRecordError(ValueError):
    """The TXT record is not a usable DMARC record."""


_POLICIES = ("none", "quarantine", "reject")
_DOMAIN = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}\Z")
_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:[^\s!]+(?:![0-9]+[kmgt]?)?\Z")


@lru_cache(maxsize=1)
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList()


def load_public_suffix_list() -> None:
    """Read the Public Suffix List now (it takes a tenth of a second), not at first use."""
    _suffix_list()


@lru_cache(maxsize=4096)
@lru_cache(maxsize=16384)
def organizational_domain(domain: str) -> str:
    """The registrable domain per the Public Suffix List (the domain itself if a suffix).

    Kept per name: the lookup encodes the name to IDNA, which costs more than the rest
    of a message's DMARC evaluation, and the same few domains come again and again."""
    domain = domain.lower().rstrip(".")
    org = _suffix_list().privatesuffix(domain)
    return str(org) if org else domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: strict = same name, relaxed = same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    return mode != "s" and organizational_domain(a) == organizational_domain(b)


@lru_cache(maxsize=4096)
def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse a DMARC record; raise DmarcRecordError when v=DMARC1 is not first or p= is
    unusable without a valid rua= (RFC 7489 section 6.6.3). Bad optional tags take defaults."""
    tags: dict[str, str] = {}
    for spec in text.split(";"):
        name, eq, value = spec.partition("=")
        name = name.strip().lower()
        if eq and name and name not in tags:
            tags[name] = value.strip()
    first = text.split(";", 1)[0].replace(" ", "").replace("\t", "")
    if first != "v=DMARC1":
        raise DmarcRecordError("record does not start with v=DMARC1")
    rua = _uris(tags.get("rua", ""))
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if not rua:
            raise DmarcRecordError("record has no valid p=")
        policy = "none"
    sub = tags.get("sp", "").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sub if sub in _POLICIES else None,
        pct=pct,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        fo=tags.get("fo", "0"),
        raw=text,
    )


def _uris(value: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in value.split(",") if _URI.match(u.strip()))


class FromHeaderError(ValueError):
    """The From header field does not name exactly one author domain."""


def author_domain(from_header_values: Sequence[str]) -> str:
    """The RFC5322.From domain; FromHeaderError unless one field holds one address."""
    if len(from_header_values) != 1:
        raise FromHeaderError(f"{len(from_header_values)} From header fields")
    domain, problem = _author_domain(from_header_values[0])
    if problem:
        raise FromHeaderError(problem)
    return domain


@lru_cache(maxsize=4096)
def _author_domain(value: str) -> tuple[str, str]:
    """(domain, "") for a From value holding one address, else ("", the problem)."""
    addresses = strict_addresses(value)
    if addresses is None or len(addresses) != 1:
        return "", "From does not hold exactly one address"
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return "", "From domain is not a valid name"
    if not _DOMAIN.match(domain) or len(domain) > 253:
        return "", "From domain is not a valid name"
    return domain, ""


def from_header_values(message: bytes | HeaderSection) -> list[str]:
    """The values of every From header field of `message` (or of its header), unfolded."""
    header = message if isinstance(message, HeaderSection) else split_header(message)
    return [f.text() for f in header.named("from")]


async def _fetch_record(resolver: Resolver, domain: str) -> list[str]:
    """The v=DMARC1 records at _dmarc.<domain> ([] when none)."""
    try:
        answers = await resolver.txt(f"_dmarc.{domain}")
    except NXDomain:
        return []
    texts = [a.decode("utf-8", "replace") for a in answers]
    return [t for t in texts if re.match(r"v\s*=\s*DMARC1\s*(;|\Z)", t)]


PolicyRecords = tuple[list[str], str, str]  # records, domain where found, organizational domain


async def discover_policy(resolver: Resolver, domain: str) -> PolicyRecords:
    """(records, domain where found, organizational domain). Raises DnsError when a lookup
    fails temporarily."""
    org = organizational_domain(domain)
    records = await _fetch_record(resolver, domain)
    if records or org == domain:
        return records, domain, org
    return await _fetch_record(resolver, org), org, org


@dataclass
class _Alignment:
    spf: bool = False
    dkim: bool = False
    temporary: list[str] = field(default_factory=list)


def _align(
    from_domain: str,
    record: DmarcRecord,
    spf: SpfOutcome | None,
    dkim: Sequence[DkimResult],
    accept_body_length_limited: bool,
) -> _Alignment:
    out = _Alignment()
    if spf is not None and aligned(spf.domain, from_domain, record.aspf):
        out.spf = spf.result.lower() == "pass"
        if spf.result.lower() == "temperror":
            out.temporary.append("spf")
    for sig in dkim:
        if not aligned(sig.domain, from_domain, record.adkim):
            continue
        if sig.status == DkimStatus.PASS and (
            accept_body_length_limited or not sig.body_length_limited
        ):
            out.dkim = True
        elif sig.status == DkimStatus.TEMPERROR:
            out.temporary.append("dkim")
    return out


def _sampled(policy: str, pct: int, rng: Callable[[], float]) -> str:
    if policy == "none" or pct >= 100 or rng() * 100 < pct:
        return policy
    return "quarantine" if policy == "reject" else "none"


async def check_dmarc(
    from_header: Sequence[str] | bytes | HeaderSection,
    spf: SpfOutcome | tuple[str, str] | None,
    dkim: Sequence[DkimResult],
    resolver: Resolver,
    *,
    rng: Callable[[], float] = random.random,
    accept_body_length_limited: bool = False,
    discover: Callable[[Resolver, str], Awaitable[PolicyRecords]] = discover_policy,
) -> DmarcResult:
    """Evaluate DMARC for a message.

    `from_header` is the message (bytes), its header section or the values of its From
    header fields;
    `spf` is (result, domain) for the MAIL FROM domain (or HELO when the sender was null);
    `discover` finds the policy records (`discover_policy`, or one that caches its answers).
    """
    values: Sequence[str] = (
        from_header_values(from_header)
        if isinstance(from_header, bytes | HeaderSection)
        else from_header
    )
    try:
        from_domain = author_domain(values)
    except FromHeaderError as exc:
        return DmarcResult("permerror", disposition="reject", reason=str(exc))
    spf_outcome = SpfOutcome(*spf) if isinstance(spf, tuple) else spf
    try:
        records, found_at, org = await discover(resolver, from_domain)
    except DnsError as exc:
        return DmarcResult("temperror", from_domain=from_domain, reason=f"DNS: {exc}")
    if len(records) != 1:
        why = "no DMARC record" if not records else "several DMARC records"
        return DmarcResult("none", from_domain=from_domain, org_domain=org, reason=why)
    try:
        record = parse_dmarc_record(records[0])
    except DmarcRecordError as exc:
        return DmarcResult("permerror", from_domain=from_domain, org_domain=org, reason=str(exc))
    use_sp = found_at != from_domain and record.subdomain_policy is not None
    policy = record.subdomain_policy if use_sp and record.subdomain_policy else record.policy
    alignment = _align(from_domain, record, spf_outcome, dkim, accept_body_length_limited)

    def result(outcome: str, reason: str, disposition: str = "none") -> DmarcResult:
        # Built whole rather than with dataclasses.replace: this runs for every message.
        return DmarcResult(
            outcome, policy, disposition, from_domain, org, record, reason,
            alignment.spf, alignment.dkim,
        )  # fmt: skip

    if alignment.spf or alignment.dkim:
        passed = "aligned " + " and ".join(
            n for n, ok in (("SPF", alignment.spf), ("DKIM", alignment.dkim)) if ok
        )
        return result("pass", passed)
    if alignment.temporary:
        return result("temperror", f"aligned {'/'.join(alignment.temporary)} temperror")
    return result("fail", "no aligned SPF or DKIM pass", _sampled(policy, record.pct, rng))
