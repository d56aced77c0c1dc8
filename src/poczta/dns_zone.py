"""The in-memory zone resolver of the tests: `ZoneResolver`, answering from a dict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from poczta.dns_answers import (
    DnssecBogus,
    DnsTimeout,
    MxRecord,
    NXDomain,
    ServFail,
    TlsaRecord,
    Validated,
    normalize_name,
    reverse_name,
)

__all__ = ["ZoneResolver"]

T = TypeVar("T")


def _txt_bytes(value: object) -> bytes:
    """One TXT record from a zone value: str, bytes, or a list of character-strings."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return b"".join(_txt_bytes(part) for part in value)
    raise TypeError(f"not a TXT value: {value!r}")


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

    DNSSEC: answers for names at or below one of `secure_zones` are secure (one reached
    through CNAMEs only when every name on the way is); (name, type) pairs in `bogus`
    fail as a validating resolver fails a bogus answer. TLSA values are `TlsaRecord`s
    or their text ("3 1 1 ab12...").
    """

    records: dict[str, dict[str, list[object]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    timeout: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)
    max_cname_chain: int = 8
    timeout_rtypes: set[tuple[str, str]] = field(default_factory=set)
    secure_zones: set[str] = field(default_factory=set)
    bogus: set[tuple[str, str]] = field(default_factory=set)
    validating: bool = True

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
        return self._follow(name, rtype)[0]

    def _follow(self, name: str, rtype: str) -> tuple[Sequence[object], list[str]]:
        """The values of `rtype` at `name` after its CNAMEs, and the names on the way."""
        name = normalize_name(name)
        chain: list[str] = []
        for _ in range(self.max_cname_chain + 1):
            chain.append(name)
            node = self._node(name, rtype)
            if rtype in node:
                return node[rtype], chain
            cname = node.get("CNAME")
            if not cname:
                return [], chain
            name = normalize_name(str(cname[0]))
        raise ServFail(f"CNAME chain too long at {name}")

    def _node(self, name: str, rtype: str) -> dict[str, list[object]]:
        """The records at `name`, or the failure configured for asking it for `rtype`."""
        self.queries.append((name, rtype))
        if (name, rtype) in self.bogus:
            raise DnssecBogus(f"{name} {rtype}: DNSSEC validation failed (dnssec bogus)")
        if name in self.timeout or (name, rtype) in self.timeout_rtypes:
            raise DnsTimeout(name)
        if name in self.servfail:
            raise ServFail(name)
        node = self.records.get(name)
        if node is None:
            raise NXDomain(name)
        return node

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

    async def mx_validated(self, name: str) -> Validated[MxRecord]:
        values, chain = self._follow(name, "MX")
        records = []
        for v in values:
            pref, exchange = cast(tuple[int, str], v)
            records.append(MxRecord(int(pref), normalize_name(str(exchange))))
        return self._validated(records, chain)

    async def a_validated(self, name: str) -> Validated[str]:
        values, chain = self._follow(name, "A")
        return self._validated([str(v) for v in values], chain)

    async def aaaa_validated(self, name: str) -> Validated[str]:
        values, chain = self._follow(name, "AAAA")
        return self._validated([str(v) for v in values], chain)

    async def tlsa(self, name: str) -> Validated[TlsaRecord]:
        try:
            values, chain = self._follow(name, "TLSA")
        except NXDomain:
            return Validated([], False)
        records = [v if isinstance(v, TlsaRecord) else TlsaRecord.from_text(str(v)) for v in values]
        return self._validated(records, chain)

    async def cname_validated(self, name: str) -> Validated[str]:
        name = normalize_name(name)
        target = self._node(name, "CNAME").get("CNAME", [])[:1]
        return Validated([normalize_name(str(t)) for t in target], self._secure(name))

    def _validated(self, records: list[T], chain: Sequence[str]) -> Validated[T]:
        secure = all(self._secure(n) for n in chain)
        return Validated(records, secure, chain[-1] if len(chain) > 1 else "")

    def _secure(self, name: str) -> bool:
        name = normalize_name(name)
        return self.validating and any(
            name == zone or name.endswith("." + zone)
            for zone in map(normalize_name, self.secure_zones)
        )
