"""The MX plan: which hosts to try, in which order, for one destination domain (RFC 5321 5.1).

`mx_plan` asks the `Resolver` (MX, then A and AAAA of each exchange: `mx_answers`) and
hands the answers to `plan_from_answers`, which decides without I/O (`MxPlans` keeps
the answers of each domain while the DNS answers they came from are cached):

- MX records in preference order, equal preferences shuffled by the injected random
  source; no MX record (the name exists) means the domain itself, at preference 0
  (the implicit MX).
- A null MX (RFC 7505, an exchange of "."): the domain accepts no mail, a permanent
  failure (5.1.10). As in Postfix, a null MX beside other records counts the same.
- An exchange that is a numeric address is used as that address with a warning, as
  Postfix does ("numeric domain name in resource data of MX record"); an exchange that
  is no valid host name is skipped with a warning. `localhost` and `*.localhost` are
  this machine (RFC 6761).
- Loops: the first preference at which an exchange is this machine (a loopback or
  unspecified address, one of `local_addresses`, a localhost name) and every worse one
  are dropped, as Postfix does; when nothing is left that is "mail loops back to
  myself" (permanent) or, if better exchanges had no address, "unable to find primary
  relay" (temporary).
- Exchanges without addresses are skipped. When none has one: temporary if any lookup
  failed temporarily, else permanent (5.4.4), as with Postfix's defaults.
- At most `limit` addresses in all (Postfix's smtp_mx_address_limit, 5), the best first.

A DNS temporary failure on the MX lookup is a temporary failure; NXDOMAIN is permanent.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from poczta.dns import (
    AnswerTrail,
    DerivedCache,
    DnsPythonResolver,
    DnsTempError,
    MxRecord,
    NXDomain,
    Resolver,
    normalize_name,
)

MX_ADDRESS_LIMIT = 5
MAX_MX_RECORDS = 16  # exchanges resolved at most, the best preferences first

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class MxHost:
    """One host to try, with its addresses in the order to try them."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MxPlan:
    """The hosts to try for a domain, best first; `implicit` when it has no MX record."""

    domain: str
    hosts: tuple[MxHost, ...]
    implicit: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MxFailure:
    """No host can be tried: permanent (bounce) or temporary (try again later)."""

    domain: str
    permanent: bool
    enhanced: str
    text: str


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """What the A and AAAA lookups of one exchange gave."""

    addresses: tuple[str, ...] = ()
    temporary: bool = False  # a lookup failed temporarily (and gave no address)


def order_mx(records: Sequence[MxRecord], rng: random.Random) -> list[MxRecord]:
    """Preference order, each group of equal preferences in random order."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r.preference)  # sorted() is stable


def _is_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


# The same few names and addresses come up for every message: parsing them (and the
# ValueError of each name that is no address) is kept.
@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_numeric(name: str) -> bool:
    return _ip(name) is not None


def _is_localhost(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


def _is_local(address: str, local: Collection[str], loopback_is_local: bool) -> bool:
    if address in local:
        return True
    ip = _ip(address)
    if ip is None:
        raise ValueError(f"{address!r} is no IP address")
    return ip.is_unspecified or (loopback_is_local and ip.is_loopback)


def _candidates(
    domain: str, mx: Sequence[MxRecord] | None, rng: random.Random
) -> list[tuple[str, int]]:
    if mx is None:
        return [(domain, 0)]
    return [(r.exchange, r.preference) for r in order_mx(mx, rng)[:MAX_MX_RECORDS]]


def plan_from_answers(
    domain: str,
    mx: Sequence[MxRecord] | None,
    addresses: Mapping[str, HostAddresses],
    *,
    rng: random.Random,
    limit: int = MX_ADDRESS_LIMIT,
    local_addresses: Collection[str] = (),
    loopback_is_local: bool = True,
) -> MxPlan | MxFailure:
    """The plan from the resolver's answers; `mx` is None when the domain has no MX."""
    if mx is not None and any(not r.exchange for r in mx):
        return MxFailure(domain, True, "5.1.10", f"domain {domain} accepts no mail (null MX)")
    hosts: list[MxHost] = []
    warnings: list[str] = []
    temporary = False
    self_pref: int | None = None
    candidates = _candidates(domain, mx, rng)
    for name, pref in candidates:
        if _is_numeric(name):
            warnings.append(f"numeric domain name in MX record for {domain}: {name}")
            found = HostAddresses((name,))
        elif not _is_hostname(name):
            warnings.append(f"malformed domain name in MX record for {domain}: {name!r}")
            continue
        elif _is_localhost(name):
            found = HostAddresses(("127.0.0.1",))
        else:
            found = addresses.get(name, HostAddresses())
            found = HostAddresses(tuple(filter(_is_numeric, found.addresses)), found.temporary)
        if any(_is_local(a, local_addresses, loopback_is_local) for a in found.addresses):
            self_pref = pref
            break
        temporary = temporary or found.temporary
        if found.addresses:
            hosts.append(MxHost(name, pref, found.addresses))
    if self_pref is not None:
        hosts = [h for h in hosts if h.preference < self_pref]
        if not hosts:
            return _loops(domain, any(pref < self_pref for _, pref in candidates))
    if not hosts:
        return _no_host(domain, mx is None, temporary)
    return MxPlan(domain, _limit(hosts, limit), mx is None, tuple(warnings))


def _loops(domain: str, better_existed: bool) -> MxFailure:
    if better_existed:  # better exchanges than this machine, none with an address
        return MxFailure(domain, False, "4.4.4", f"unable to find primary relay for {domain}")
    return MxFailure(domain, True, "5.4.6", f"mail for {domain} loops back to myself")


def _no_host(domain: str, implicit: bool, temporary: bool) -> MxFailure:
    if temporary:
        text = f"temporary DNS failure resolving the mail hosts of {domain}"
        return MxFailure(domain, False, "4.4.3", text)
    if implicit:
        text = f"domain {domain} has no MX and no address record"
    else:
        text = f"no MX host for {domain} has a valid address record"
    return MxFailure(domain, True, "5.4.4", text)


def _limit(hosts: list[MxHost], limit: int) -> tuple[MxHost, ...]:
    out: list[MxHost] = []
    left = limit
    for host in hosts:
        if left <= 0:
            break
        out.append(MxHost(host.name, host.preference, host.addresses[:left]))
        left -= len(out[-1].addresses)
    return tuple(out)


async def _addresses(resolver: Resolver, name: str) -> HostAddresses:
    found: list[str] = []
    temporary = False
    for lookup in (resolver.a, resolver.aaaa):
        try:
            found.extend(await lookup(name))
        except DnsTempError:
            temporary = True
        except NXDomain:
            break
    return HostAddresses(tuple(found), temporary and not found)


def _ascii_domain(domain: str) -> str | None:
    name = normalize_name(domain)
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


@dataclass(frozen=True, slots=True)
class MxAnswers:
    """What DNS said of a domain's mail hosts, before any order is drawn: its MX records
    (None without any) and the addresses of the exchanges."""

    domain: str  # as looked up (the A-label form)
    mx: tuple[MxRecord, ...] | None
    addresses: Mapping[str, HostAddresses]
    # plans with no order to draw, by their settings (the answers are kept while they hold)
    _plans: dict[tuple[object, ...], MxPlan | MxFailure] = field(
        default_factory=dict, compare=False, repr=False
    )

    def plan(
        self,
        *,
        rng: random.Random,
        limit: int = MX_ADDRESS_LIMIT,
        local_addresses: Collection[str] = (),
        loopback_is_local: bool = True,
    ) -> MxPlan | MxFailure:
        """The plan from these answers, equal preferences in an order `rng` draws now;
        without equal preferences the plan is always the same, so it is made once."""
        mx = self.mx
        fixed = mx is None or len({r.preference for r in mx}) == len(mx)
        key = (limit, tuple(local_addresses), loopback_is_local)
        if fixed and (kept := self._plans.get(key)) is not None:
            return kept
        plan = plan_from_answers(
            self.domain,
            mx,
            self.addresses,
            rng=rng,
            limit=limit,
            local_addresses=local_addresses,
            loopback_is_local=loopback_is_local,
        )
        if fixed:
            self._plans[key] = plan
        return plan


async def mx_answers(resolver: Resolver, domain: str) -> MxAnswers | MxFailure:
    """Look up the MX records of `domain` (a U-label domain as its A-label) and the
    addresses of its exchanges."""
    name = _ascii_domain(domain)
    if name is None or not _is_hostname(name):
        return MxFailure(domain, True, "5.1.2", f"bad destination domain {domain!r}")
    try:
        records = await resolver.mx(name)
    except NXDomain:
        return MxFailure(name, True, "5.1.2", f"domain {name} does not exist")
    except DnsTempError:
        return MxFailure(name, False, "4.4.3", f"temporary DNS failure looking up MX of {name}")
    mx = tuple(records) or None
    best = sorted(records, key=lambda r: r.preference)[:MAX_MX_RECORDS]
    names = [name] if mx is None else [r.exchange for r in best]
    wanted = sorted(
        {n for n in names if _is_hostname(n) and not _is_numeric(n) and not _is_localhost(n)}
    )
    found = await asyncio.gather(*(_addresses(resolver, n) for n in wanted))
    return MxAnswers(name, mx, dict(zip(wanted, found, strict=True)))


async def mx_plan(
    resolver: Resolver,
    domain: str,
    *,
    rng: random.Random | None = None,
    limit: int = MX_ADDRESS_LIMIT,
    local_addresses: Collection[str] = (),
    loopback_is_local: bool = True,
) -> MxPlan | MxFailure:
    """Look up the MX plan for `domain` (a U-label domain is looked up as its A-label)."""
    answers = await mx_answers(resolver, domain)
    if isinstance(answers, MxFailure):
        return answers
    return answers.plan(
        rng=rng or random.Random(),
        limit=limit,
        local_addresses=local_addresses,
        loopback_is_local=loopback_is_local,
    )


class MxPlans:
    """MX plans of destination domains, their DNS answers kept between messages.

    With a `DnsPythonResolver` the answers a plan came from are reused for the next
    message to the same domain while every one of them is still in the resolver's
    cache unchanged, and for `ttl` seconds at most (`DerivedCache`), so never past a
    DNS TTL; the order among equal preferences is still drawn for each message
    (RFC 5321 5.1). Failures are not kept. Other resolvers are asked each time.
    """

    def __init__(self, resolver: Resolver, *, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.resolver = resolver
        self._answers: DerivedCache[str, MxAnswers] = DerivedCache(max_entries, ttl=ttl)

    async def plan(
        self,
        domain: str,
        *,
        rng: random.Random,
        limit: int = MX_ADDRESS_LIMIT,
        local_addresses: Collection[str] = (),
        loopback_is_local: bool = True,
    ) -> MxPlan | MxFailure:
        """`mx_plan` for `domain`, from the kept answers while they hold."""
        answers = self._answers.get(domain)
        if answers is None:
            trail = self._trail()
            found = await mx_answers(trail if trail is not None else self.resolver, domain)
            if isinstance(found, MxFailure):
                return found
            if trail is not None:
                self._answers.put(domain, found, trail)
            answers = found
        return answers.plan(
            rng=rng,
            limit=limit,
            local_addresses=local_addresses,
            loopback_is_local=loopback_is_local,
        )

    def _trail(self) -> AnswerTrail | None:
        resolver = self.resolver
        if isinstance(resolver, DnsPythonResolver) and self._answers.ttl > 0:
            return resolver.tracking()
        return None
