"""SPF records (RFC 7208 sections 4.5, 4.6, 5 and 6): selection and parsing into terms.

`parse_record` checks the whole record against the grammar before anything is
evaluated (a syntax error anywhere is a permerror, RFC 7208 4.6) and turns it into
`Mechanism`s and the two known modifiers, with every domain-spec parsed into macro
parts. It raises `SpfSyntaxError` and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from poczta.mailauth.spf_macros import MacroExpand, MacroPart, SpfSyntaxError, parse_macro_string

__all__ = [
    "DNS_MECHANISMS",
    "Mechanism",
    "SpfRecord",
    "SpfSyntaxError",
    "is_spf_record",
    "parse_domain_spec",
    "parse_record",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
# Terms that cost one of the ten DNS lookups (the redirect modifier costs one too).
DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_VERSION = re.compile(rb"v=spf1(?: |$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.DOTALL)
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
_DOMAIN_CIDR = re.compile(r"(?::(.+?))?(?:/([0-9]+))?(?://([0-9]+))?", re.DOTALL)
_CIDR = re.compile(r"0|[1-9][0-9]{0,2}")
_TOPLABEL = re.compile(r"(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9\-]*[a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive: qualifier, mechanism name and its arguments."""

    qualifier: str
    name: str
    domain: tuple[MacroPart, ...] | None = None
    network: IPNetwork | None = None
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A parsed "v=spf1" record."""

    mechanisms: tuple[Mechanism, ...]
    redirect: tuple[MacroPart, ...] | None
    explanation: tuple[MacroPart, ...] | None
    has_all: bool


def is_spf_record(txt: bytes) -> bool:
    """Whether a TXT record is an SPF version 1 record (RFC 7208 4.5)."""
    return _VERSION.match(txt) is not None


def parse_record(text: str) -> SpfRecord:
    """Parse a whole record (starting with "v=spf1"); raise `SpfSyntaxError`."""
    terms = text.split(" ")
    if terms[0].lower() != "v=spf1":
        raise SpfSyntaxError(f"not an SPF record: {text[:40]!r}")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, tuple[MacroPart, ...]] = {}
    for term in terms[1:]:
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanisms.append(_parse_directive(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if name in modifiers:
                raise SpfSyntaxError(f"{name}= given more than once")
            modifiers[name] = parse_domain_spec(value)
        else:
            parse_macro_string(value)  # unknown modifiers are ignored, but must parse
    return SpfRecord(
        mechanisms=tuple(mechanisms),
        redirect=modifiers.get("redirect"),
        explanation=modifiers.get("exp"),
        has_all=any(m.name == "all" for m in mechanisms),
    )


def _parse_directive(term: str) -> Mechanism:
    match = _DIRECTIVE.fullmatch(term)
    if match is None:
        raise SpfSyntaxError(f"invalid term {term!r}")
    qualifier, name, rest = match.group(1) or "+", match.group(2).lower(), match.group(3)
    if name not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {term!r}")
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"invalid term {term!r}")
        return Mechanism(qualifier, name, text=term)
    if name in ("ip4", "ip6"):
        return Mechanism(qualifier, name, network=_parse_network(name, rest, term), text=term)
    if name in ("include", "exists", "ptr"):
        if name == "ptr" and not rest:
            return Mechanism(qualifier, name, text=term)
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{name} needs a domain: {term!r}")
        return Mechanism(qualifier, name, domain=parse_domain_spec(rest[1:]), text=term)
    return _parse_a_or_mx(qualifier, name, rest, term)


def _parse_a_or_mx(qualifier: str, name: str, rest: str, term: str) -> Mechanism:
    match = _DOMAIN_CIDR.fullmatch(rest)
    if match is None:
        raise SpfSyntaxError(f"invalid term {term!r}")
    spec, cidr4, cidr6 = match.groups()
    domain = parse_domain_spec(spec) if spec is not None else None
    return Mechanism(
        qualifier,
        name,
        domain=domain,
        cidr4=_cidr(cidr4, 32, term),
        cidr6=_cidr(cidr6, 128, term),
        text=term,
    )


def _cidr(text: str | None, maximum: int, term: str) -> int:
    if text is None:
        return maximum
    if _CIDR.fullmatch(text) is None or int(text) > maximum:
        raise SpfSyntaxError(f"invalid prefix length in {term!r}")
    return int(text)


def _parse_network(name: str, rest: str, term: str) -> IPNetwork:
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{name} needs an address: {term!r}")
    address, _, length = rest[1:].partition("/")
    allowed = r"[0-9.]+" if name == "ip4" else r"[0-9A-Fa-f:.]+"
    if re.fullmatch(allowed, address) is None:
        raise SpfSyntaxError(f"invalid address in {term!r}")
    maximum = 32 if name == "ip4" else 128
    prefix = _cidr(length, maximum, term) if "/" in rest else maximum
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise SpfSyntaxError(f"invalid address in {term!r}") from exc
    if ip.version != (4 if name == "ip4" else 6):
        raise SpfSyntaxError(f"wrong address family in {term!r}")
    return ipaddress.ip_network((ip, prefix), strict=False)


def parse_domain_spec(text: str) -> tuple[MacroPart, ...]:
    """A domain-spec: a macro string ending in a macro or in "." and a top label."""
    parts = parse_macro_string(text)
    if not parts:
        raise SpfSyntaxError("empty domain-spec")
    last = parts[-1]
    if isinstance(last, MacroExpand):
        return parts
    tail = last[:-1] if last.endswith(".") else last
    _, dot, toplabel = tail.rpartition(".")
    if not dot or _TOPLABEL.fullmatch(toplabel) is None:
        raise SpfSyntaxError(f"invalid domain-spec {text!r}")
    return parts
