"""DNS blocklist checks (RFC 5782): client IPs and domains looked up in configured zones.

Pure: takes a `Resolver` and the zones to ask. An IP zone is asked about the client
address (IPv4 as reversed octets, IPv6 as reversed nibbles, both followed by the zone
name); a domain zone about each domain it is given (MAIL FROM, HELO, From). The
answer is one `ZoneResult` per zone:

- ``listed``: an A answer counts as a listing by the zone's rules; the TXT record at the
  same name, when there is one, gives the reason quoted in the reply;
- ``pass``: NXDOMAIN or no A record: not listed;
- ``temperror``: the lookup timed out or failed; never a listing;
- ``permerror``: the zone answered with a code that is no listing, such as Spamhaus'
  127.255.255.x ("query refused", "typo in the zone name") or an address outside
  127.0.0.0/8 (a resolver that rewrites NXDOMAIN); never a listing either.

The zones are asked concurrently; nothing here raises on odd input.
"""

from __future__ import annotations

import ipaddress
import re
from asyncio import gather
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from poczta.dns import DnsError, NXDomain, Resolver

__all__ = [
    "DEFAULT_REFUSED",
    "DnsblKind",
    "DnsblStatus",
    "DnsblZone",
    "ZoneResult",
    "check_dnsbl",
    "dnsbl_query_name",
    "listed_results",
    "parse_client_ip",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Answers that report an error rather than a listing (Spamhaus: 127.255.255.252 typo
#: in the zone name, .254 query through a public resolver, .255 too many queries).
DEFAULT_REFUSED: tuple[str, ...] = ("127.255.255.0/24",)
_LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
ZONE_ACTIONS = ("reject", "junk")
MAX_REASON = 200
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class DnsblKind(StrEnum):
    IP = "ip"
    DOMAIN = "domain"


class DnsblStatus(StrEnum):
    LISTED = "listed"
    PASS = "pass"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


def _networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in specs)


@dataclass(frozen=True)
class DnsblZone:
    """One blocklist: its name, what it lists, which answers count, what a listing does.

    `listed` names the answers (addresses or CIDR networks) that count as a listing;
    empty means any 127.0.0.0/8 address. Answers in `refused` never count, whatever
    `listed` says. `code_actions` overrides `action` for some answers, e.g. a policy
    block list inside a combined zone that should only send mail to Junk.
    """

    name: str
    kind: DnsblKind = DnsblKind.IP
    action: str = "reject"
    listed: tuple[str, ...] = ()
    refused: tuple[str, ...] = DEFAULT_REFUSED
    code_actions: tuple[tuple[str, str], ...] = ()
    ask_txt: bool = True
    ipv6: bool = True
    _listed_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _refused_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _code_nets: tuple[tuple[IPNetwork, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name.strip().rstrip(".").lower()
        if not name or _as_domain(name) is None:
            raise ValueError(f"not a DNS zone name: {self.name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", DnsblKind(self.kind))
        for action in (self.action, *(a for _, a in self.code_actions)):
            if action not in ZONE_ACTIONS:
                raise ValueError(f"zone {name}: action must be reject or junk, not {action!r}")
        object.__setattr__(self, "_listed_nets", _networks(self.listed) or (_LOOPBACK_NET,))
        object.__setattr__(self, "_refused_nets", _networks(self.refused))
        codes = tuple((ipaddress.ip_network(c, strict=False), a) for c, a in self.code_actions)
        object.__setattr__(self, "_code_nets", codes)

    def classify(self, answer: str) -> DnsblStatus:
        """What one A answer means for this zone."""
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            return DnsblStatus.PERMERROR
        if any(address in net for net in self._refused_nets):
            return DnsblStatus.PERMERROR
        if address not in _LOOPBACK_NET:
            return DnsblStatus.PERMERROR
        if any(address in net for net in self._listed_nets):
            return DnsblStatus.LISTED
        return DnsblStatus.PASS

    def action_for(self, codes: Iterable[str]) -> str:
        """The action a listing with these answers calls for (the strictest one)."""
        actions = set()
        for code in codes:
            address = ipaddress.ip_address(code)
            override = next((a for net, a in self._code_nets if address in net), self.action)
            actions.add(override)
        return "reject" if "reject" in actions or not actions else "junk"


@dataclass(frozen=True)
class ZoneResult:
    """What one zone said: the status, the subject it was about and the answers."""

    zone: DnsblZone
    status: DnsblStatus
    subject: str = ""  # the IP or domain that is listed (or the first one asked)
    query: str = ""  # the DNS name that gave the status
    codes: tuple[str, ...] = ()  # the A answers counted as a listing
    reason: str = ""  # the TXT text, cleaned; empty when the zone gave none
    detail: str = ""  # what went wrong, on temperror / permerror
    asked: tuple[str, ...] = ()  # every subject asked about

    @property
    def listed(self) -> bool:
        return self.status is DnsblStatus.LISTED

    @property
    def action(self) -> str | None:
        """reject or junk when listed, else None."""
        return self.zone.action_for(self.codes) if self.listed else None

    @property
    def reply_text(self) -> str:
        """The text for a refusal, naming the subject, the zone and its reason."""
        what = f"Client host [{self.subject}]" if self.zone.kind is DnsblKind.IP else self.subject
        text = f"{what} blocked using {self.zone.name}"
        return f"{text}; {self.reason}" if self.reason else text


def dnsbl_query_name(subject: str, zone: DnsblZone) -> str | None:
    """The name to ask `zone` about `subject`, or None when the subject cannot be asked."""
    if zone.kind is DnsblKind.IP:
        address = parse_client_ip(subject)
        if address is None or (address.version == 6 and not zone.ipv6):
            return None
        if address.version == 4:
            labels = str(address).split(".")
        else:
            labels = list(address.exploded.replace(":", ""))
        name = ".".join(reversed(labels)) + "." + zone.name
    else:
        domain = _as_domain(subject)
        if domain is None:
            return None
        name = f"{domain}.{zone.name}"
    return name if len(name) <= 253 else None


@lru_cache(maxsize=4096)
def parse_client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address from `text` (brackets and "IPv6:" allowed; IPv4-mapped IPv6 as
    IPv4; an IPv6 scope such as ``%eth0`` dropped), or None."""
    text = text.strip().removeprefix("[").removesuffix("]")
    text = text[5:] if text.lower().startswith("ipv6:") else text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(address.packed)
    return address


@lru_cache(maxsize=4096)
def _as_domain(text: str) -> str | None:
    """A lower-cased ASCII domain name, or None for an IP literal or an invalid name."""
    name = text.strip().rstrip(".").lower()
    if not name or name.startswith("[") or parse_client_ip(name) is not None:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    return name


def _clean_reason(records: Sequence[bytes]) -> str:
    texts = (_CONTROL.sub(" ", r.decode("utf-8", "replace")).strip() for r in records)
    joined = "; ".join(t for t in texts if t)
    return joined if len(joined) <= MAX_REASON else joined[: MAX_REASON - 3] + "..."


async def _ask(resolver: Resolver, zone: DnsblZone, subject: str) -> ZoneResult:
    """One lookup of one subject in one zone."""
    query = dnsbl_query_name(subject, zone)
    if query is None:
        return ZoneResult(zone, DnsblStatus.PASS, subject, detail="not a name this zone lists")
    try:
        answers = await resolver.a(query)
    except NXDomain:
        answers = []
    except DnsError as exc:
        return ZoneResult(zone, DnsblStatus.TEMPERROR, subject, query, detail=f"DNS: {exc}")
    except Exception as exc:  # a resolver breaking its contract must not break the caller
        detail = f"internal error: {exc!r}"
        return ZoneResult(zone, DnsblStatus.TEMPERROR, subject, query, detail=detail)
    statuses = [(a, zone.classify(a)) for a in answers]
    codes = tuple(a for a, s in statuses if s is DnsblStatus.LISTED)
    if not codes:
        odd = [a for a, s in statuses if s is DnsblStatus.PERMERROR]
        if odd:
            detail = f"answer {', '.join(odd)} is not a listing (query refused or error)"
            return ZoneResult(zone, DnsblStatus.PERMERROR, subject, query, detail=detail)
        return ZoneResult(zone, DnsblStatus.PASS, subject, query)
    reason = ""
    if zone.ask_txt:
        try:
            reason = _clean_reason(await resolver.txt(query))
        except Exception:  # the reason is optional; the listing stands without it
            reason = ""
    return ZoneResult(zone, DnsblStatus.LISTED, subject, query, codes, reason)


_PRECEDENCE = (DnsblStatus.LISTED, DnsblStatus.TEMPERROR, DnsblStatus.PERMERROR)


async def _check_zone(resolver: Resolver, zone: DnsblZone, subjects: Sequence[str]) -> ZoneResult:
    if not subjects:
        return ZoneResult(zone, DnsblStatus.PASS, detail="nothing to ask")
    results = await gather(*(_ask(resolver, zone, s) for s in subjects))
    chosen = results[0]
    for status in _PRECEDENCE:
        found = next((r for r in results if r.status is status), None)
        if found is not None:
            chosen = found
            break
    return ZoneResult(
        zone,
        chosen.status,
        chosen.subject,
        chosen.query,
        chosen.codes,
        chosen.reason,
        chosen.detail,
        asked=tuple(subjects),
    )


def _unique_domains(domains: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for domain in domains:
        name = _as_domain(domain) if isinstance(domain, str) else None
        if name is not None and name not in seen:
            seen.append(name)
    return seen


async def check_dnsbl(
    resolver: Resolver,
    zones: Sequence[DnsblZone],
    *,
    client_ip: str | None = None,
    domains: Iterable[str] = (),
) -> list[ZoneResult]:
    """Ask every zone concurrently; one result per zone, in the order of `zones`.

    IP zones are asked about `client_ip`; domain zones about each distinct valid name in
    `domains` (IP literals and invalid names are skipped). A domain zone is listed when
    any of its names is; otherwise it reports a temperror or permerror if one occurred.
    """
    names = _unique_domains(domains)
    ip = parse_client_ip(client_ip) if isinstance(client_ip, str) else None
    ip_subjects = [str(ip)] if ip is not None else []
    jobs = [
        _check_zone(resolver, zone, ip_subjects if zone.kind is DnsblKind.IP else names)
        for zone in zones
    ]
    return list(await gather(*jobs))


def listed_results(results: Iterable[ZoneResult]) -> list[ZoneResult]:
    """The results that are listings, in order."""
    return [r for r in results if r.listed]
