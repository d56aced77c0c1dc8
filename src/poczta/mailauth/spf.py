"""SPF evaluation (RFC 7208): `check_host` for one identity and `check_spf` for an SMTP transaction.

Pure: the only outside world is the async `Resolver` handed in, so a check never
blocks the event loop and tests run against an in-memory zone. The result is a value
with the verdict, the mechanism that decided it, the explanation (``exp=``, expanded)
on ``fail`` and a problem text on ``permerror``/``temperror``; nothing here raises.

We wrote our own rather than use pyspf: pyspf is synchronous and does its DNS through
its own hooks, so in an asyncio server it would either block the loop during lookups
or need a thread per check; and it is untyped. Record parsing lives in `spf_record`,
macro expansion in `spf_macros`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from poczta.dns import DnsError, DnsTempError, NXDomain, Resolver
from poczta.mailauth.spf_macros import (
    MacroPart,
    MacroValues,
    SpfSyntaxError,
    expand,
    parse_macro_string,
    truncate_domain,
)
from poczta.mailauth.spf_record import (
    DNS_MECHANISMS,
    Mechanism,
    SpfRecord,
    is_spf_record,
    parse_record,
)

__all__ = [
    "DEFAULT_EXPLANATION",
    "SpfLimits",
    "SpfResult",
    "SpfResultCode",
    "check_host",
    "check_spf",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_EXPLANATION = "%{c} is not allowed to send mail for %{d}"


class SpfResultCode(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIERS = {
    "+": SpfResultCode.PASS,
    "-": SpfResultCode.FAIL,
    "~": SpfResultCode.SOFTFAIL,
    "?": SpfResultCode.NEUTRAL,
}


@dataclass(frozen=True, slots=True)
class SpfLimits:
    """RFC 7208 4.6.4 processing limits."""

    dns_lookups: int = 10  # include, a, mx, ptr, exists and redirect together
    void_lookups: int = 2  # lookups answered with NXDOMAIN or no records
    mx_names: int = 10  # address lookups one "mx" may make; needing more is a permerror
    ptr_names: int = 10  # PTR names looked at; the rest are ignored


DEFAULT_LIMITS = SpfLimits()


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The verdict for one identity, with what decided it."""

    result: SpfResultCode
    domain: str
    sender: str
    identity: str = "mailfrom"  # "mailfrom" or "helo"
    mechanism: str | None = None  # the directive that matched, as written
    explanation: str | None = None  # on fail: exp= text or the default explanation
    problem: str | None = None  # on permerror / temperror: what went wrong
    dns_lookups: int = 0
    void_lookups: int = 0


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: SpfResultCode
    domain: str
    record: SpfRecord | None = None
    mechanism: str | None = None


@lru_cache(maxsize=2048)
def _parse_cached(text: str) -> SpfRecord:
    return parse_record(text)


def _is_valid_domain(name: str) -> bool:
    """RFC 7208 4.3: a well-formed, multi-label domain name."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or name.startswith("["):
        return False
    labels = name.split(".")
    return len(labels) >= 2 and all(0 < len(label) <= 63 for label in labels)


@lru_cache(maxsize=4096)
def _client_address(ip: str) -> IPAddress:
    address = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_prefix(ip: IPAddress, other: str, prefix: int) -> bool:
    try:
        address = ipaddress.ip_address(other)
    except ValueError:
        return False
    if address.version != ip.version:
        return False
    shift = ip.max_prefixlen - prefix
    return int(ip) >> shift == int(address) >> shift


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _in_network(ip: IPAddress, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """ip4/ip6 match; an ip6 network of IPv4-mapped addresses also matches IPv4 clients."""
    if ip.version == 4 and network.version == 6 and network.subnet_of(_MAPPED):
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip in network


@dataclass
class _Evaluation:
    """The state of one top-level check: counters and per-check lookup caches."""

    ip: IPAddress
    resolver: Resolver
    limits: SpfLimits
    values: MacroValues = field(init=False)
    dns_lookups: int = 0
    void_lookups: int = 0
    _ptr_names: list[str] | None = None
    _validated: dict[str, str] = field(default_factory=dict)

    def count_lookup(self) -> None:
        self.dns_lookups += 1
        if self.dns_lookups > self.limits.dns_lookups:
            raise _PermError(f"more than {self.limits.dns_lookups} DNS lookups")

    def count_void(self) -> None:
        self.void_lookups += 1
        if self.void_lookups > self.limits.void_lookups:
            raise _PermError(f"more than {self.limits.void_lookups} void lookups")

    async def record(self, domain: str) -> SpfRecord | None:
        """The domain's one SPF record; None when it has none (RFC 7208 4.4, 4.5)."""
        try:
            txts = await self.resolver.txt(domain)
        except NXDomain:
            return None
        except DnsTempError as exc:
            raise _TempError(f"SPF record lookup for {domain}: {exc}") from exc
        records = [txt for txt in txts if is_spf_record(txt)]
        if not records:
            return None
        if len(records) > 1:
            raise _PermError(f"{domain} has {len(records)} SPF records")
        try:
            return _parse_cached(records[0].decode("latin-1"))
        except SpfSyntaxError as exc:
            raise _PermError(f"{domain}: {exc}") from exc

    async def evaluate(self, domain: str) -> _Outcome:
        """check_host() for `domain` (RFC 7208 4): record, mechanisms, then redirect."""
        if not _is_valid_domain(domain):
            return _Outcome(SpfResultCode.NONE, domain)
        record = await self.record(domain)
        if record is None:
            return _Outcome(SpfResultCode.NONE, domain)
        for mechanism in record.mechanisms:
            if mechanism.name in DNS_MECHANISMS:
                self.count_lookup()
            if await self.matches(mechanism, domain):
                result = _QUALIFIERS[mechanism.qualifier]
                return _Outcome(result, domain, record, mechanism.text)
        if record.redirect is not None and not record.has_all:
            self.count_lookup()
            target = await self.target(record.redirect, domain)
            outcome = await self.evaluate(target)
            if outcome.result is SpfResultCode.NONE:
                raise _PermError(f"redirect to {target}, which has no SPF record")
            return outcome
        return _Outcome(SpfResultCode.NEUTRAL, domain, record)

    async def target(self, spec: tuple[MacroPart, ...] | None, domain: str) -> str:
        if spec is None:
            return domain
        return truncate_domain(await expand(spec, self.values, domain))

    async def matches(self, mechanism: Mechanism, domain: str) -> bool:
        name = mechanism.name
        if name == "all":
            return True
        if mechanism.network is not None:
            return _in_network(self.ip, mechanism.network)
        target = await self.target(mechanism.domain, domain)
        prefix = mechanism.cidr4 if self.ip.version == 4 else mechanism.cidr6
        if name == "include":
            return await self.include(target)
        if name == "a":
            addresses = await self.addresses(target, count_void=True)
            return any(_in_prefix(self.ip, a, prefix) for a in addresses)
        if name == "mx":
            return await self.mx(target, prefix)
        if name == "ptr":
            return await self.ptr(target)
        return await self.exists(target)

    async def include(self, target: str) -> bool:
        outcome = await self.evaluate(target)
        if outcome.result is SpfResultCode.NONE:
            raise _PermError(f"include:{target} has no SPF record")
        return outcome.result is SpfResultCode.PASS

    async def addresses(self, name: str, *, count_void: bool = False) -> list[str]:
        """A or AAAA records (by the client's family); NXDOMAIN is no records."""
        try:
            if self.ip.version == 4:
                found = await self.resolver.a(name)
            else:
                found = await self.resolver.aaaa(name)
        except NXDomain:
            found = []
        except DnsTempError as exc:
            raise _TempError(f"address lookup for {name}: {exc}") from exc
        if count_void and not found:
            self.count_void()
        return found

    async def mx(self, target: str, prefix: int) -> bool:
        try:
            exchanges = await self.resolver.mx(target)
        except NXDomain:
            exchanges = []
        except DnsTempError as exc:
            raise _TempError(f"MX lookup for {target}: {exc}") from exc
        if not exchanges:
            self.count_void()
        queried = 0
        for mx in sorted(exchanges, key=lambda record: record.preference):
            if not mx.exchange:
                continue  # null MX (RFC 7505)
            queried += 1
            if queried > self.limits.mx_names:
                raise _PermError(f"mx:{target} needs more than {self.limits.mx_names} lookups")
            if any(_in_prefix(self.ip, a, prefix) for a in await self.addresses(mx.exchange)):
                return True
        return False

    async def exists(self, target: str) -> bool:
        try:
            found = await self.resolver.a(target)
        except NXDomain:
            found = []
        except DnsTempError as exc:
            raise _TempError(f"exists lookup for {target}: {exc}") from exc
        if not found:
            self.count_void()
        return bool(found)

    async def ptr_names(self) -> list[str]:
        """The client's PTR names (first `ptr_names` of them); errors give none."""
        if self._ptr_names is None:
            try:
                names = await self.resolver.ptr(str(self.ip))
            except DnsError:
                names = []
            self._ptr_names = names[: self.limits.ptr_names]
        return self._ptr_names

    async def validated(self, names: list[str]) -> list[str]:
        """Names whose forward lookup gives back the client address (RFC 7208 5.5)."""
        out = []
        for name in names:
            try:
                addresses = await self.addresses(name)
            except _TempError:
                continue
            if any(_in_prefix(self.ip, a, self.ip.max_prefixlen) for a in addresses):
                out.append(name)
        return out

    async def ptr(self, target: str) -> bool:
        names = await self.ptr_names()
        if not names:
            self.count_void()
        target = target.rstrip(".").lower()
        candidates = [n for n in names if n == target or n.endswith("." + target)]
        return bool(await self.validated(candidates))

    async def validated_name(self, domain: str) -> str:
        """`%{p}`: a validated name, preferring `domain` itself, then its subdomains."""
        if domain not in self._validated:
            names = await self.validated(await self.ptr_names())
            domain_lc = domain.rstrip(".").lower()
            exact = [n for n in names if n == domain_lc]
            sub = [n for n in names if n.endswith("." + domain_lc)]
            chosen = (exact or sub or names or ["unknown"])[0]
            self._validated[domain] = chosen
        return self._validated[domain]

    async def explain(self, outcome: _Outcome, default: tuple[MacroPart, ...]) -> str:
        """The explanation for a fail: the record's exp= text, else the default."""
        text = await self.exp_text(outcome)
        parts = default if text is None else text
        try:
            return await expand(parts, self.values, outcome.domain)
        except (_PermError, _TempError):
            return ""

    async def exp_text(self, outcome: _Outcome) -> tuple[MacroPart, ...] | None:
        record = outcome.record
        if record is None or record.explanation is None:
            return None
        try:
            target = await self.target(record.explanation, outcome.domain)
            txts = await self.resolver.txt(target)
        except (DnsError, _PermError, _TempError):
            return None
        if len(txts) != 1:
            return None
        try:
            return parse_macro_string(txts[0].decode("ascii"), explanation=True)
        except (UnicodeDecodeError, SpfSyntaxError):
            return None


def _split_sender(sender: str) -> tuple[str, str]:
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "", sender
    return local or "postmaster", domain


async def check_host(
    ip: str,
    domain: str,
    sender: str,
    *,
    resolver: Resolver,
    helo: str = "",
    receiver: str = "",
    limits: SpfLimits = DEFAULT_LIMITS,
    identity: str = "mailfrom",
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Callable[[], float] = time.time,
) -> SpfResult:
    """RFC 7208 check_host(): may `ip` send mail for `domain` (and `sender`)?

    `helo` and `receiver` feed the %{h} and %{r} macros; `default_explanation` is a
    macro string used on fail when the record has no usable exp=. Never raises.
    """
    local, sender_domain = _split_sender(sender)
    sender_domain = sender_domain or domain
    full_sender = f"{local}@{sender_domain}"
    try:
        address = _client_address(ip)
    except ValueError:
        bad = f"invalid client address {ip!r}"
        return SpfResult(SpfResultCode.PERMERROR, domain, full_sender, identity, problem=bad)
    evaluation = _Evaluation(address, resolver, limits)
    evaluation.values = MacroValues(
        sender=full_sender,
        local_part=local,
        sender_domain=sender_domain,
        ip=address,
        helo=helo,
        receiver=receiver,
        timestamp=int(clock()),
        validated_name=evaluation.validated_name,
    )
    code, mechanism, explanation, problem = await _run(evaluation, domain, default_explanation)
    return SpfResult(
        code,
        domain,
        full_sender,
        identity,
        mechanism=mechanism,
        explanation=explanation,
        problem=problem,
        dns_lookups=evaluation.dns_lookups,
        void_lookups=evaluation.void_lookups,
    )


_Verdict = tuple[SpfResultCode, str | None, str | None, str | None]


async def _run(evaluation: _Evaluation, domain: str, default_explanation: str) -> _Verdict:
    """Evaluate and turn failures into results: (result, mechanism, explanation, problem)."""
    try:
        outcome = await evaluation.evaluate(domain)
        explanation = None
        if outcome.result is SpfResultCode.FAIL:
            default = _default_parts(default_explanation)
            explanation = await evaluation.explain(outcome, default)
        return outcome.result, outcome.mechanism, explanation, None
    except _PermError as exc:
        return SpfResultCode.PERMERROR, None, None, str(exc)
    except _TempError as exc:
        return SpfResultCode.TEMPERROR, None, None, str(exc)
    except Exception as exc:  # a resolver breaking its contract must not break the caller
        return SpfResultCode.TEMPERROR, None, None, f"internal error: {exc!r}"


@lru_cache(maxsize=64)
def _default_parts(text: str) -> tuple[MacroPart, ...]:
    try:
        return parse_macro_string(text, explanation=True)
    except SpfSyntaxError:
        return (text,)


async def check_spf(
    ip: str,
    mail_from: str,
    helo: str,
    resolver: Resolver,
    *,
    receiver: str = "",
    limits: SpfLimits = DEFAULT_LIMITS,
    default_explanation: str = DEFAULT_EXPLANATION,
    clock: Callable[[], float] = time.time,
) -> SpfResult:
    """The SPF check of an SMTP transaction (RFC 7208 2.3, 2.4).

    The MAIL FROM identity is checked; for the null reverse-path ("" or "<>") the
    HELO identity is checked instead, as postmaster@<helo>.
    """
    mail_from = mail_from.strip()
    if mail_from.startswith("<") and mail_from.endswith(">"):
        mail_from = mail_from[1:-1]
    if mail_from:
        _, domain = _split_sender(mail_from)
        sender, identity = mail_from, "mailfrom"
    else:
        domain, sender, identity = helo, f"postmaster@{helo}", "helo"
    return await check_host(
        ip,
        domain,
        sender,
        resolver=resolver,
        helo=helo,
        receiver=receiver,
        limits=limits,
        identity=identity,
        default_explanation=default_explanation,
        clock=clock,
    )
