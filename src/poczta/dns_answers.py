"""What DNS lookups answer and how they fail: the errors, the record types, the resolver interfaces.

`poczta.dns` re-exports everything here; this module exists so that the resolvers there
stay short. `trusts_ad` is the rule for which resolvers' DNSSEC verdicts poczta believes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "DnsError",
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
    "normalize_name",
    "reverse_name",
    "trusts_ad",
]


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


class DnssecBogus(ServFail):
    """A validating resolver refused the answer: its DNSSEC signatures are wrong."""


@dataclass(frozen=True)
class MxRecord:
    preference: int
    exchange: str


@dataclass(frozen=True)
class TlsaRecord:
    """One TLSA record (RFC 6698): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def from_text(cls, text: str) -> TlsaRecord:
        """From the presentation form "3 1 1 ab12..." (ValueError when it is not that)."""
        usage, selector, mtype, *data = text.split()
        return cls(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data)))

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


T = TypeVar("T")


@dataclass(frozen=True)
class Validated(Generic[T]):
    """An answer's records and whether a trusted validating resolver vouched for them.

    `canonical` is where the records were found when the name asked for is an alias:
    the end of its CNAME chain ("" when no CNAME was followed).
    """

    records: list[T]
    secure: bool
    canonical: str = ""


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


@runtime_checkable
class DnssecResolver(Resolver, Protocol):
    """A `Resolver` that also tells secure answers from insecure ones.

    `validating` is False when no answer can be secure (the resolver is not trusted
    to validate). The `*_validated` lookups fail as the plain ones do; `tlsa` answers
    NXDOMAIN as an empty, insecure answer, since for DANE it means "no TLSA records".
    A bogus answer is `DnssecBogus` (or another `DnsTempError`). An answer reached
    through CNAMEs is secure only when every CNAME on the way is too, as the AD bit of
    a validating resolver covers the whole answer. `cname_validated` asks for the
    CNAME of a name itself, not followed: its target (none when the name is not an
    alias) and whether that one record is secure.
    """

    validating: bool

    async def mx_validated(self, name: str) -> Validated[MxRecord]: ...

    async def a_validated(self, name: str) -> Validated[str]: ...

    async def aaaa_validated(self, name: str) -> Validated[str]: ...

    async def tlsa(self, name: str) -> Validated[TlsaRecord]: ...

    async def cname_validated(self, name: str) -> Validated[str]: ...


def trusts_ad(setting: bool | None, nameservers: Iterable[str]) -> bool:
    """Whether the AD bit of these resolvers is believed: `setting` when given, else only
    when every one is a loopback address (a validating resolver on this machine)."""
    if setting is not None:
        return setting
    servers = [str(ns) for ns in nameservers]
    return bool(servers) and all(_is_loopback(ns) for ns in servers)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a DNS-over-HTTPS URL or the like: not this machine


def normalize_name(name: str) -> str:
    return name.rstrip(".").lower()


def reverse_name(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (IPv6 as reversed nibbles)."""
    return ipaddress.ip_address(ip).reverse_pointer
