"""DNS lookups for mail authentication: one async `Resolver` interface and its implementations.

Every DNS question poczta asks goes through `Resolver`. The outcomes that SPF, DKIM
and DMARC tell apart are kept apart here:

- an answer: a list of records (possibly after following CNAMEs);
- no data (the name exists, the type does not): an empty list;
- `NXDomain`: the name does not exist;
- `DnsTempError` (`ServFail`, `DnsTimeout`): try again later; `DnssecBogus` is the
  SERVFAIL of a validating resolver whose extended error (RFC 8914) says the
  signatures did not validate.

DNSSEC (for DANE, RFC 7672): a `DnssecResolver` also says of each answer whether it
is *secure*, that is whether a resolver poczta trusts to validate set the AD bit.
poczta validates nothing itself: RFC 7672 wants a validating resolver the MTA trusts,
normally on the same machine, and by default only the AD bit of loopback resolvers is
believed (`trusts_ad`). Queries then carry the DO bit; the security of an answer is
cached with it, so a DNSSEC question after a plain one costs no second query. So is
where a CNAME chain ended (`Validated.canonical`), which DANE needs for the TLSA base
domain of an MX host that is an alias.

`ZoneResolver` answers from an in-memory zone for tests; `DnsPythonResolver` asks
real servers through dnspython's async resolver and keeps a bounded, TTL-respecting
cache of answers and of negative answers. `DerivedCache` keeps what the checks compute
from those answers (an SPF result, a blocklist verdict) for as long as every answer
that went into it is still cached unchanged, and never longer than its own TTL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import dns.asyncresolver
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from poczta.dns_answers import (
    DnsError,
    DnssecBogus,
    DnssecResolver,
    DnsTempError,
    DnsTimeout,
    MxRecord,
    NXDomain,
    Resolver,
    ServFail,
    TlsaRecord,
    Validated,
    normalize_name,
    reverse_name,
    trusts_ad,
)
from poczta.dns_zone import ZoneResolver

__all__ = [
    "AnswerTrail",
    "DerivedCache",
    "DnsCache",
    "DnsError",
    "DnsPythonResolver",
    "DnsTempError",
    "DnsTimeout",
    "DnssecBogus",
    "DnssecResolver",
    "MxRecord",
    "NXDomain",
    "Resolver",
    "ServFail",
    "TlsaRecord",
    "Validated",
    "ZoneResolver",
    "normalize_name",
    "reverse_name",
    "trusts_ad",
]


# What one lookup produced, as cached: the records, or the NXDOMAIN marker.
_Records = list[bytes] | list[str] | list[MxRecord] | list[TlsaRecord]
_NX = object()


@dataclass
class _CacheEntry:
    expires: float
    value: object  # a _Records list or _NX
    secure: bool = False  # a trusted validating resolver set the AD bit
    canonical: str = ""  # the end of the CNAME chain followed, if one was


class DnsCache:
    """A bounded LRU cache of answers keyed by (name, type), each kept for its TTL.

    Positive answers live for their TTL capped at `max_ttl`; negative answers (no data
    and NXDOMAIN) for the SOA-derived negative TTL capped at `max_negative_ttl`.
    Temporary failures are never cached. `clock` is monotonic seconds.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        max_ttl: float = 86_400.0,
        max_negative_ttl: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> object | None:
        entry = self.lookup(key)
        return None if entry is None else entry.value

    def lookup(self, key: tuple[str, str]) -> _CacheEntry | None:
        """The live entry of `key` (counted as a hit or a miss, like `get`)."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self.clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(
        self,
        key: tuple[str, str],
        value: object,
        ttl: float,
        *,
        negative: bool,
        secure: bool = False,
        canonical: str = "",
    ) -> None:
        ttl = min(ttl, self.max_negative_ttl if negative else self.max_ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = _CacheEntry(self.clock() + ttl, value, secure, canonical)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def entry(self, key: tuple[str, str]) -> _CacheEntry | None:
        """The live entry of `key`, without counting a hit or touching the LRU order."""
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > self.clock() else None

    def holds(self, key: tuple[str, str], entry: _CacheEntry) -> bool:
        """Whether `entry` is still the live answer cached for `key`."""
        return self._entries.get(key) is entry and entry.expires > self.clock()


_RDTYPES = {
    "TXT": dns.rdatatype.TXT,
    "A": dns.rdatatype.A,
    "AAAA": dns.rdatatype.AAAA,
    "MX": dns.rdatatype.MX,
    "PTR": dns.rdatatype.PTR,
    "TLSA": dns.rdatatype.TLSA,
    "CNAME": dns.rdatatype.CNAME,
}
_Answer = tuple[_Records, bool, str]  # the records, whether they are secure, the CNAME target


def _convert(rtype: str, rrset: Iterable[object]) -> _Records:
    """dnspython rdata → the plain values the `Resolver` protocol returns."""
    if rtype == "TXT":
        return [b"".join(rd.strings) for rd in rrset]  # type: ignore[attr-defined]
    if rtype in ("A", "AAAA"):
        return [str(rd.address) for rd in rrset]  # type: ignore[attr-defined]
    if rtype == "MX":
        return [
            MxRecord(int(rd.preference), normalize_name(rd.exchange.to_text()))  # type: ignore[attr-defined]
            for rd in rrset
        ]
    if rtype == "TLSA":
        return [
            TlsaRecord(rd.usage, rd.selector, rd.mtype, bytes(rd.cert))  # type: ignore[attr-defined]
            for rd in rrset
        ]
    return [normalize_name(rd.target.to_text()) for rd in rrset]  # type: ignore[attr-defined]


class DnsPythonResolver:
    """The production `Resolver`: dnspython's async stub resolver plus a `DnsCache`.

    `nameservers` are IP addresses asked at `port`; `None` reads the system
    configuration (resolv.conf). `timeout` bounds one attempt at one server, `lifetime`
    the whole lookup. CNAME chains are followed by the recursive server and dnspython;
    a chain longer than `max_cname_chain` counts as SERVFAIL. Concurrent identical
    questions share one query. `trust_ad` says whether these servers validate DNSSEC
    for poczta (see `trusts_ad`: None believes loopback servers only).
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 2.0,
        lifetime: float = 5.0,
        cache: DnsCache | None = None,
        max_cname_chain: int = 8,
        trust_ad: bool | None = None,
    ) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = [str(ipaddress.ip_address(ns)) for ns in nameservers]
        self.validating = trusts_ad(trust_ad, map(str, self._resolver.nameservers))
        if self.validating:
            self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.port = port
        self._resolver.timeout = timeout
        self._resolver.lifetime = lifetime
        self._resolver.cache = None
        self.cache = cache if cache is not None else DnsCache()
        self.max_cname_chain = max_cname_chain
        self._inflight: dict[tuple[str, str], asyncio.Task[_Answer]] = {}

    async def txt(self, name: str) -> list[bytes]:
        return await self._lookup(name, "TXT")  # type: ignore[return-value]

    async def a(self, name: str) -> list[str]:
        return await self._lookup(name, "A")  # type: ignore[return-value]

    async def aaaa(self, name: str) -> list[str]:
        return await self._lookup(name, "AAAA")  # type: ignore[return-value]

    async def mx(self, name: str) -> list[MxRecord]:
        return await self._lookup(name, "MX")  # type: ignore[return-value]

    async def ptr(self, ip: str) -> list[str]:
        return await self._lookup(reverse_name(ip), "PTR")  # type: ignore[return-value]

    async def mx_validated(self, name: str) -> Validated[MxRecord]:
        return Validated(*await self._answer(name, "MX"))  # type: ignore[arg-type]

    async def a_validated(self, name: str) -> Validated[str]:
        return Validated(*await self._answer(name, "A"))  # type: ignore[arg-type]

    async def aaaa_validated(self, name: str) -> Validated[str]:
        return Validated(*await self._answer(name, "AAAA"))  # type: ignore[arg-type]

    async def tlsa(self, name: str) -> Validated[TlsaRecord]:
        try:
            return Validated(*await self._answer(name, "TLSA"))  # type: ignore[arg-type]
        except NXDomain:
            return Validated([], False)

    async def cname_validated(self, name: str) -> Validated[str]:
        return Validated(*await self._answer(name, "CNAME"))  # type: ignore[arg-type]

    def tracking(self) -> AnswerTrail:
        """A view of this resolver that records the cached answers each lookup used."""
        return AnswerTrail(self)

    async def _lookup(self, name: str, rtype: str) -> _Records:
        return (await self._answer(name, rtype))[0]

    async def _answer(self, name: str, rtype: str) -> _Answer:
        key = (normalize_name(name), rtype)
        cached = self.cache.lookup(key)
        if cached is not None and cached.value is _NX:
            raise NXDomain(key[0])
        if cached is not None:
            return cast(_Records, cached.value).copy(), cached.secure, cached.canonical
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._query(*key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        records, secure, canonical = await asyncio.shield(task)
        return records.copy(), secure, canonical

    def _finished(self, key: tuple[str, str], task: asyncio.Task[_Answer]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an abandoned failure is not reported

    async def _query(self, name: str, rtype: str) -> _Answer:
        try:
            qname = dns.name.from_text(name or ".")
        except (dns.exception.DNSException, UnicodeError) as exc:
            # A name that cannot be written in DNS cannot exist.
            raise NXDomain(name) from exc
        try:
            answer = await self._resolver.resolve(
                qname, _RDTYPES[rtype], raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            secure = self.validating and _all_authenticated(exc.responses().values())  # type: ignore[no-untyped-call]
            ttl = _negative_ttl(exc)
            self.cache.put((name, rtype), _NX, ttl, negative=True, secure=secure)
            raise NXDomain(name) from exc
        except dns.exception.Timeout as exc:
            raise DnsTimeout(name) from exc
        except dns.resolver.NoNameservers as exc:
            bogus = _bogus_reason(exc) if self.validating else None
            if bogus is not None:
                raise DnssecBogus(f"{name} {rtype}: DNSSEC validation failed ({bogus})") from exc
            raise ServFail(f"{name}: {exc}") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise ServFail(f"{name}: {exc}") from exc
        chain = answer.chaining_result
        if len(chain.cnames) > self.max_cname_chain:
            raise ServFail(f"{name}: CNAME chain too long")
        records = _convert(rtype, answer.rrset or ())
        canonical = normalize_name(chain.canonical_name.to_text()) if chain.cnames else ""
        secure = self.validating and _all_authenticated([answer.response])
        self.cache.put(
            (name, rtype),
            records,
            chain.minimum_ttl,
            negative=not records,
            secure=secure,
            canonical=canonical,
        )
        return records, secure, canonical


def _all_authenticated(responses: Iterable[dns.message.Message]) -> bool:
    """Whether the server set the AD bit (RFC 4035 3.2.3) on every one of these."""
    found = list(responses)
    return bool(found) and all(r.flags & dns.flags.AD for r in found)


# RFC 8914 extended errors that mean the DNSSEC validation of the answer failed.
_BOGUS_CODES = frozenset(
    {
        dns.edns.EDECode.DNSSEC_BOGUS,
        dns.edns.EDECode.SIGNATURE_EXPIRED,
        dns.edns.EDECode.SIGNATURE_NOT_YET_VALID,
        dns.edns.EDECode.DNSKEY_MISSING,
        dns.edns.EDECode.RRSIGS_MISSING,
        dns.edns.EDECode.NO_ZONE_KEY_BIT_SET,
        dns.edns.EDECode.NSEC_MISSING,
    }
)


def _bogus_reason(exc: dns.resolver.NoNameservers) -> str | None:
    """The extended error of a SERVFAIL that says the answer is bogus, if one does."""
    for error in exc.kwargs.get("errors", ()):
        response = error[-1] if error else None
        if not isinstance(response, dns.message.Message):
            continue
        for ede in response.extended_errors():
            if ede.code in _BOGUS_CODES:
                label = dns.edns.EDECode.to_text(ede.code).lower().replace("_", " ")
                return f"{label}: {ede.text}" if ede.text else label
    return None


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """The negative-caching TTL of an NXDOMAIN answer (SOA TTL and minimum)."""
    ttls = []
    for response in exc.responses().values():  # type: ignore[no-untyped-call]
        try:
            ttls.append(response.resolve_chaining().minimum_ttl)
        except (dns.exception.DNSException, AttributeError):
            continue
    return float(min(ttls)) if ttls else 0.0


class AnswerTrail:
    """A `Resolver` over a `DnsPythonResolver` that notes which cache entry answered each
    question, so that a result computed from the answers can be trusted exactly as long
    as every one of them is still cached unchanged (`complete` is False once an answer
    was not cached at all: a temporary failure, or a TTL of zero)."""

    def __init__(self, resolver: DnsPythonResolver) -> None:
        self.resolver = resolver
        self.used: list[tuple[tuple[str, str], _CacheEntry]] = []
        self.complete = True

    async def txt(self, name: str) -> list[bytes]:
        return await self._lookup(name, "TXT")  # type: ignore[return-value]

    async def a(self, name: str) -> list[str]:
        return await self._lookup(name, "A")  # type: ignore[return-value]

    async def aaaa(self, name: str) -> list[str]:
        return await self._lookup(name, "AAAA")  # type: ignore[return-value]

    async def mx(self, name: str) -> list[MxRecord]:
        return await self._lookup(name, "MX")  # type: ignore[return-value]

    async def ptr(self, ip: str) -> list[str]:
        return await self._lookup(reverse_name(ip), "PTR")  # type: ignore[return-value]

    async def _lookup(self, name: str, rtype: str) -> _Records:
        key = (normalize_name(name), rtype)
        records: object = _NX
        try:
            found = await self.resolver._lookup(name, rtype)
            records = found
            return found
        except NXDomain:
            raise
        except BaseException:
            self.complete = False
            raise
        finally:
            self._note(key, records)

    def _note(self, key: tuple[str, str], records: object) -> None:
        entry = self.resolver.cache.entry(key)
        # The entry must hold what this lookup answered: another one may have replaced it.
        if entry is None or not (entry.value is records or entry.value == records):
            self.complete = False
        else:
            self.used.append((key, entry))

    def current(self) -> bool:
        """Whether every answer used so far is still the one cached."""
        cache = self.resolver.cache
        return self.complete and all(cache.holds(key, entry) for key, entry in self.used)


K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Derived(Generic[V]):
    value: V
    trail: AnswerTrail
    expires: float


class DerivedCache(Generic[K, V]):
    """A bounded cache of values computed from DNS answers (see `AnswerTrail`).

    A value is given back while every answer its computation used is still cached
    unchanged in the resolver's `DnsCache`, and for at most `ttl` seconds; so it is
    exactly what computing it again would give. Least recently used entries go first
    beyond `max_entries`. `clock` is monotonic seconds.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[K, _Derived[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found.expires <= self.clock() or not found.trail.current():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found.value

    def put(self, key: K, value: V, trail: AnswerTrail) -> None:
        """Keep `value`, computed through `trail`, unless an answer it used was not cached."""
        if not trail.complete or self.max_entries <= 0 or self.ttl <= 0:
            return
        self._entries[key] = _Derived(value, trail, self.clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
