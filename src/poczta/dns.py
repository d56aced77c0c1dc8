"""DNS lookups for mail authentication: one async `Resolver` interface and its implementations.

Every DNS question poczta asks goes through `Resolver`. The outcomes that SPF, DKIM
and DMARC tell apart are kept apart here:

- an answer: a list of records (possibly after following CNAMEs);
- no data (the name exists, the type does not): an empty list;
- `NXDomain`: the name does not exist;
- `DnsTempError` (`ServFail`, `DnsTimeout`): try again later.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename


class DnsError(Exception):
    """Base of every DNS failure a lookup can raise."""


class NXDomain(DnsError):
    """The queried name does not exist."""


class DnsTempError(DnsError):
    """A temporary failure: the answer may be different when asked again."""


class ServFail(DnsTempError):
    """The server answered SERVFAIL (or REFUSED)."""


class DnsTimeout(DnsTempError):
    """No server answered in time."""


@dataclass(frozen=True)
class MxRecord:
    preference: int
    exchange: str


class Resolver(Protocol):
    """Async DNS lookups. Names are absolute or relative; a trailing dot is optional.

    Each method returns the records of the asked type (empty when the name exists but
    has none), raises `NXDomain` when the name does not exist and `DnsTempError` on
    SERVFAIL or timeout.
    """

    async def txt(self, name: str) -> list[bytes]:
        """TXT records, each with its character-strings joined."""
        ...

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def mx(self, name: str) -> list[MxRecord]: ...

    async def ptr(self, ip: str) -> list[str]:
        """Names for an IP address (the reverse lookup is built here, not by the caller)."""
        ...


def _txt_bytes(value: object) -> bytes:
    """One TXT record from a zone value: str, bytes, or a list of character-strings."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return b"".join(_txt_bytes(part) for part in value)
    raise TypeError(f"not a TXT value: {value!r}")


def normalize_name(name: str) -> str:
    return name.rstrip(".").lower()


def reverse_name(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (IPv6 as reversed nibbles)."""
    return ipaddress.ip_address(ip).reverse_pointer


@dataclass
class ZoneResolver:
    """An in-memory zone: answers from a dict of (name, type) → records, for tests.

    `records` maps a name to a mapping of record type ("TXT", "A", "AAAA", "MX", "PTR",
    "CNAME") to a list of values: TXT as str or bytes, MX as (preference, exchange),
    others as str. A TXT value may also be a list of strings, joined like the
    character-strings of one record. Types no method asks for (such as the retired
    SPF type 99) are kept but never answered. Names listed in `servfail` or `timeout`
    raise those failures for every type; (name, type) pairs in `timeout_rtypes` time
    out for that type only. A name absent from `records` (and from the failure sets)
    is NXDOMAIN.
    """

    records: dict[str, dict[str, list[object]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    timeout: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)
    max_cname_chain: int = 8
    timeout_rtypes: set[tuple[str, str]] = field(default_factory=set)

    def add(self, name: str, rtype: str, *values: object) -> None:
        self.records.setdefault(normalize_name(name), {}).setdefault(rtype.upper(), []).extend(
            values
        )

    @classmethod
    def from_mapping(cls, zone: Mapping[str, Mapping[str, Iterable[object]]]) -> ZoneResolver:
        resolver = cls()
        for name, types in zone.items():
            for rtype, values in types.items():
                resolver.add(name, rtype, *values)
        return resolver

    def _lookup(self, name: str, rtype: str) -> Sequence[object]:
        name = normalize_name(name)
        for _ in range(self.max_cname_chain + 1):
            self.queries.append((name, rtype))
            if name in self.timeout or (name, rtype) in self.timeout_rtypes:
                raise DnsTimeout(name)
            if name in self.servfail:
                raise ServFail(name)
            node = self.records.get(name)
            if node is None:
                raise NXDomain(name)
            if rtype in node:
                return node[rtype]
            cname = node.get("CNAME")
            if not cname:
                return []
            name = normalize_name(str(cname[0]))
        raise ServFail(f"CNAME chain too long at {name}")

    async def txt(self, name: str) -> list[bytes]:
        return [_txt_bytes(v) for v in self._lookup(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._lookup(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self._lookup(name, "AAAA")]

    async def mx(self, name: str) -> list[MxRecord]:
        out = []
        for v in self._lookup(name, "MX"):
            pref, exchange = cast(tuple[int, str], v)
            out.append(MxRecord(int(pref), normalize_name(str(exchange))))
        return out

    async def ptr(self, ip: str) -> list[str]:
        return [normalize_name(str(v)) for v in self._lookup(reverse_name(ip), "PTR")]


# What one lookup produced, as cached: the records, or the NXDOMAIN marker.
_Records = list[bytes] | list[str] | list[MxRecord]
_NX = object()


@dataclass
class _CacheEntry:
    expires: float
    value: object  # a _Records list or _NX


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
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self.clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.value

    def put(self, key: tuple[str, str], value: object, ttl: float, *, negative: bool) -> None:
        ttl = min(ttl, self.max_negative_ttl if negative else self.max_ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = _CacheEntry(self.clock() + ttl, value)
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
}


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
    return [normalize_name(rd.target.to_text()) for rd in rrset]  # type: ignore[attr-defined]


class DnsPythonResolver:
    """The production `Resolver`: dnspython's async stub resolver plus a `DnsCache`.

    `nameservers` are IP addresses asked at `port`; `None` reads the system
    configuration (resolv.conf). `timeout` bounds one attempt at one server, `lifetime`
    the whole lookup. CNAME chains are followed by the recursive server and dnspython;
    a chain longer than `max_cname_chain` counts as SERVFAIL. Concurrent identical
    questions share one query.
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
    ) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = [str(ipaddress.ip_address(ns)) for ns in nameservers]
        self._resolver.port = port
        self._resolver.timeout = timeout
        self._resolver.lifetime = lifetime
        self._resolver.cache = None
        self.cache = cache if cache is not None else DnsCache()
        self.max_cname_chain = max_cname_chain
        self._inflight: dict[tuple[str, str], asyncio.Task[_Records]] = {}

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

    def tracking(self) -> AnswerTrail:
        """A view of this resolver that records the cached answers each lookup used."""
        return AnswerTrail(self)

    async def _lookup(self, name: str, rtype: str) -> _Records:
        key = (normalize_name(name), rtype)
        cached = self.cache.get(key)
        if cached is _NX:
            raise NXDomain(key[0])
        if cached is not None:
            return cast(_Records, cached).copy()
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._query(*key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        records = await asyncio.shield(task)
        return records.copy()

    def _finished(self, key: tuple[str, str], task: asyncio.Task[_Records]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an abandoned failure is not reported

    async def _query(self, name: str, rtype: str) -> _Records:
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
            self.cache.put((name, rtype), _NX, _negative_ttl(exc), negative=True)
            raise NXDomain(name) from exc
        except dns.exception.Timeout as exc:
            raise DnsTimeout(name) from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise ServFail(f"{name}: {exc}") from exc
        if len(answer.chaining_result.cnames) > self.max_cname_chain:
            raise ServFail(f"{name}: CNAME chain too long")
        records = _convert(rtype, answer.rrset or ())
        ttl = answer.chaining_result.minimum_ttl
        self.cache.put((name, rtype), records, ttl, negative=not records)
        return records


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
