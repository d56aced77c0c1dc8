"""Greylisting: the triplet rules, the exemptions, and the `GreylistStore` they persist through.

A delivery attempt is known by its triplet: the client's network (IPv4 /24 and IPv6
/64 by default, so a provider's pool of neighbouring outbound hosts counts as one),
the envelope sender (lower-cased, ``""`` for the null sender) and the recipient. The
first attempt of an unknown triplet is deferred with ``451 4.7.1``; a retry after
`delay` and within `retry_window` passes, and whitelists the triplet (or, with
``whitelist_scope="network"``, the whole client network) for `whitelist_period`,
renewed on every later pass. A retry after the window starts again.

Reputation rule: a client network whose triplets have passed greylisting
`auto_whitelist_after` times (within one whitelist period of each other) is itself
whitelisted. Only real mail servers keep a queue and retry; a network that has
proven this several times is a server pool (a large provider sends each new
correspondent from a different host), and delaying each of its new senders again
gains nothing but late mail.

Exempt without looking at the store: authenticated users (the caller does not ask),
listed client networks, listed recipient or sender domains, and mail whose sender
passed SPF or aligned DKIM for a listed domain. Time comes from an injected clock in
seconds since the epoch; `sweep` removes expired entries.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import aligned
from poczta.mailauth.dnsbl import parse_client_ip

__all__ = [
    "GreylistDecision",
    "GreylistOutcome",
    "GreylistSettings",
    "GreylistStore",
    "GreylistTriplet",
    "Greylister",
    "MemoryGreylistStore",
    "NetworkRecord",
    "TripletRecord",
    "client_network",
    "normalize_sender",
    "verified_domains",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class GreylistSettings:
    """The greylisting policy; times are seconds."""

    enabled: bool = True
    delay: float = 300.0
    retry_window: float = 86_400.0
    whitelist_period: float = 36 * 86_400.0
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    whitelist_scope: str = "triplet"  # "triplet" or "network"
    exempt_networks: tuple[str, ...] = ()
    exempt_recipient_domains: tuple[str, ...] = ()
    exempt_sender_domains: tuple[str, ...] = ()
    trusted_domains: tuple[str, ...] = ()  # SPF pass or aligned DKIM pass exempts
    auto_whitelist_after: int = 5  # passes that whitelist a network; 0 turns it off
    _exempt_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.whitelist_scope not in ("triplet", "network"):
            raise ValueError("whitelist_scope must be triplet or network")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("prefix lengths out of range")
        if min(self.delay, self.retry_window, self.whitelist_period) < 0:
            raise ValueError("greylisting times must not be negative")
        if self.retry_window <= self.delay:
            raise ValueError("retry_window must be longer than delay")
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in self.exempt_networks)
        object.__setattr__(self, "_exempt_nets", nets)

    def is_exempt_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self._exempt_nets)


@dataclass(frozen=True)
class GreylistTriplet:
    network: str  # the client network in CIDR form, e.g. "192.0.2.0/24"
    sender: str  # lower-cased envelope sender, "" for the null sender
    recipient: str  # lower-cased recipient address


@dataclass(frozen=True)
class TripletRecord:
    """A triplet's state. Pending until `passed_at` is set; deleted after `expires`."""

    triplet: GreylistTriplet
    first_seen: float
    last_seen: float
    expires: float  # pending: first_seen + retry_window; passed: last pass + period
    passed_at: float | None = None
    attempts: int = 1

    @property
    def pending(self) -> bool:
        return self.passed_at is None


@dataclass(frozen=True)
class NetworkRecord:
    """A client network's standing: how often it passed, until when it is whitelisted."""

    network: str
    passes: int
    last_pass: float
    whitelisted_until: float  # 0 when not whitelisted
    expires: float


class GreylistStore(Protocol):
    """Where greylisting state lives: the record of each triplet and client network, kept
    until it expires. The mail store keeps one (`MailStore.greylist_store`, shared by every
    process and node of the server, its backends satisfying this protocol as they are);
    `MemoryGreylistStore` is one in a process. Every method may be called concurrently."""

    async def get_triplet(self, triplet: GreylistTriplet) -> TripletRecord | None: ...

    async def put_triplet(self, record: TripletRecord) -> None:
        """Insert or replace the record of `record.triplet`."""
        ...

    async def get_network(self, network: str) -> NetworkRecord | None: ...

    async def put_network(self, record: NetworkRecord) -> None:
        """Insert or replace the record of `record.network`."""
        ...

    async def sweep(self, now: float) -> int:
        """Delete every triplet and network record whose `expires` is not after `now`;
        return how many were deleted."""
        ...


@dataclass
class MemoryGreylistStore:
    """A `GreylistStore` in dictionaries: for tests and for a server without a database."""

    triplets: dict[GreylistTriplet, TripletRecord] = field(default_factory=dict)
    networks: dict[str, NetworkRecord] = field(default_factory=dict)

    async def get_triplet(self, triplet: GreylistTriplet) -> TripletRecord | None:
        return self.triplets.get(triplet)

    async def put_triplet(self, record: TripletRecord) -> None:
        self.triplets[record.triplet] = record

    async def get_network(self, network: str) -> NetworkRecord | None:
        return self.networks.get(network)

    async def put_network(self, record: NetworkRecord) -> None:
        self.networks[record.network] = record

    async def sweep(self, now: float) -> int:
        old_t = [k for k, r in self.triplets.items() if r.expires <= now]
        old_n = [k for k, r in self.networks.items() if r.expires <= now]
        for key in old_t:
            del self.triplets[key]
        for name in old_n:
            del self.networks[name]
        return len(old_t) + len(old_n)


class GreylistOutcome(StrEnum):
    DEFER = "defer"  # greylisted: try again later
    PASS = "pass"  # a retry after the delay: passed now
    WHITELISTED = "whitelisted"  # passed before (triplet or network)
    EXEMPT = "exempt"  # not greylisted at all


@dataclass(frozen=True)
class GreylistDecision:
    outcome: GreylistOutcome
    reason: str
    retry_in: int = 0  # seconds until a retry can pass, when deferred
    triplet: GreylistTriplet | None = None

    code = 451
    enhanced = "4.7.1"

    @property
    def deferred(self) -> bool:
        return self.outcome is GreylistOutcome.DEFER

    @property
    def text(self) -> str:
        return f"Greylisted, please try again in {self.retry_in} seconds"


@lru_cache(maxsize=4096)
def client_network(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str | None:
    """The network a client address is greylisted as, in CIDR form (None if no address)."""
    address = parse_client_ip(ip)
    if address is None:
        return None
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def normalize_sender(sender: str) -> str:
    """The envelope sender as a triplet holds it: lower-cased, "" for the null sender,
    and without a BATV tag (``prvs=TAG=user@``), which changes with every message."""
    address = sender.strip().removeprefix("<").removesuffix(">").lower()
    local, at, domain = address.rpartition("@")
    if at and local.startswith(("prvs=", "msprvs1=", "btv1==")):
        local = local.rpartition("=")[2]
        address = f"{local}@{domain}"
    return address


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


def _in_domains(domain: str, domains: Iterable[str]) -> bool:
    """Whether `domain` is one of `domains` or a subdomain of one."""
    domain = domain.rstrip(".").lower()
    for listed in domains:
        listed = listed.strip().rstrip(".").lower()
        if listed and (domain == listed or domain.endswith("." + listed)):
            return True
    return False


def verified_domains(
    spf: tuple[str, str] | None, dkim: Sequence[DkimResult], from_domain: str = ""
) -> tuple[str, ...]:
    """The domains a message is authenticated for: the SPF (result, domain) when it
    passed, and the d= of each passing DKIM signature aligned (relaxed) with the From
    domain. These are what `trusted_domains` is matched against."""
    out: list[str] = []
    if spf is not None and spf[0].lower() == "pass" and spf[1]:
        out.append(spf[1].lower())
    for sig in dkim:
        if sig.status == DkimStatus.PASS and from_domain and aligned(sig.domain, from_domain, "r"):
            out.append(sig.domain.lower())
    return tuple(dict.fromkeys(out))


class Greylister:
    """Decides one delivery attempt at a time against a `GreylistStore`."""

    def __init__(
        self,
        store: GreylistStore,
        settings: GreylistSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or GreylistSettings()
        self.clock = clock
        # Whitelisted triplets and networks confirmed recently: trusted without asking the
        # store, whose renewal of a 36-day whitelisting need not happen on every message.
        self._confirmed: dict[GreylistTriplet | str, float] = {}

    RECONFIRM_SECONDS = 3600.0
    MAX_CONFIRMED = 100_000

    def _recently_confirmed(self, triplet: GreylistTriplet, now: float) -> str | None:
        for key, what in ((triplet.network, "network"), (triplet, "triplet")):
            until = self._confirmed.get(key)
            if until is not None:
                if until > now:
                    return what
                del self._confirmed[key]
        return None

    def _confirm(self, key: GreylistTriplet | str, now: float, expires: float) -> None:
        if len(self._confirmed) >= self.MAX_CONFIRMED:
            self._confirmed.clear()
        self._confirmed[key] = min(now + self.RECONFIRM_SECONDS, expires)

    def exemption(
        self, client_ip: str, sender: str, recipient: str, verified: Sequence[str] = ()
    ) -> str | None:
        """Why this attempt is not greylisted at all, or None."""
        s = self.settings
        if not s.enabled:
            return "greylisting disabled"
        address = parse_client_ip(client_ip)
        if address is None:
            return "no client address"
        if s.is_exempt_address(address):
            return f"client {address} in an exempt network"
        if _in_domains(_domain_of(recipient), s.exempt_recipient_domains):
            return "recipient domain exempt"
        if sender and _in_domains(_domain_of(sender), s.exempt_sender_domains):
            return "sender domain exempt"
        trusted = next((d for d in verified if _in_domains(d, s.trusted_domains)), None)
        if trusted is not None:
            return f"authenticated as {trusted}"
        return None

    def triplet(self, client_ip: str, sender: str, recipient: str) -> GreylistTriplet | None:
        network = client_network(client_ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix)
        if network is None:
            return None
        return GreylistTriplet(network, normalize_sender(sender), recipient.strip().lower())

    def known(
        self, client_ip: str, sender: str, recipient: str, *, verified: Sequence[str] = ()
    ) -> GreylistDecision | None:
        """The decision when it needs no store: an exemption, or a triplet or network
        whitelisted and confirmed within the last `RECONFIRM_SECONDS`; else None (ask
        `check`, which gives the same answer in these cases)."""
        why = self.exemption(client_ip, sender, recipient, verified)
        triplet = self.triplet(client_ip, sender, recipient)
        if why is not None or triplet is None:
            return GreylistDecision(GreylistOutcome.EXEMPT, why or "no client address")
        confirmed = self._recently_confirmed(triplet, self.clock())
        if confirmed is not None:
            reason = f"{confirmed} whitelisted"
            return GreylistDecision(GreylistOutcome.WHITELISTED, reason, 0, triplet)
        return None

    async def check(
        self, client_ip: str, sender: str, recipient: str, *, verified: Sequence[str] = ()
    ) -> GreylistDecision:
        """The decision for one recipient of one attempt; records it in the store.

        `verified` are the domains the message is authenticated for (see
        `verified_domains`); leave it empty when asking before DATA.
        """
        known = self.known(client_ip, sender, recipient, verified=verified)
        if known is not None:
            return known
        triplet = self.triplet(client_ip, sender, recipient)
        assert triplet is not None  # known() answers when there is no client address
        now = self.clock()
        network = await self.store.get_network(triplet.network)
        if network is not None and network.whitelisted_until > now:
            renewed = self._renewed(network, now)
            await self.store.put_network(renewed)
            self._confirm(triplet.network, now, renewed.whitelisted_until)
            return GreylistDecision(GreylistOutcome.WHITELISTED, "network whitelisted", 0, triplet)
        record = await self.store.get_triplet(triplet)
        if record is not None and not record.pending and record.expires > now:
            period = self.settings.whitelist_period
            await self.store.put_triplet(replace(record, last_seen=now, expires=now + period))
            self._confirm(triplet, now, now + period)
            return GreylistDecision(GreylistOutcome.WHITELISTED, "triplet whitelisted", 0, triplet)
        if record is None or not record.pending or now > record.expires:
            return await self._first_seen(triplet, now, record)
        ready = record.first_seen + self.settings.delay
        if now < ready:
            attempts = record.attempts + 1
            await self.store.put_triplet(replace(record, last_seen=now, attempts=attempts))
            wait = max(1, math.ceil(ready - now))
            return GreylistDecision(GreylistOutcome.DEFER, "retry too early", wait, triplet)
        await self._passed(record, now, network)
        return GreylistDecision(GreylistOutcome.PASS, "retried after the delay", 0, triplet)

    async def _first_seen(
        self, triplet: GreylistTriplet, now: float, old: TripletRecord | None
    ) -> GreylistDecision:
        s = self.settings
        record = TripletRecord(triplet, now, now, now + s.retry_window)
        await self.store.put_triplet(record)
        reason = "first seen"
        if old is not None:
            reason = "whitelisting expired" if not old.pending else "retry window expired"
        return GreylistDecision(GreylistOutcome.DEFER, reason, math.ceil(s.delay), triplet)

    async def _passed(self, record: TripletRecord, now: float, old: NetworkRecord | None) -> None:
        s = self.settings
        expires = now + s.whitelist_period
        await self.store.put_triplet(
            replace(
                record, last_seen=now, passed_at=now, attempts=record.attempts + 1, expires=expires
            )
        )
        passes = (old.passes if old is not None and old.expires > now else 0) + 1
        whitelist = s.whitelist_scope == "network" or (
            s.auto_whitelist_after > 0 and passes >= s.auto_whitelist_after
        )
        until = expires if whitelist else 0.0
        await self.store.put_network(
            NetworkRecord(record.triplet.network, passes, now, until, expires)
        )

    def _renewed(self, record: NetworkRecord, now: float) -> NetworkRecord:
        until = now + self.settings.whitelist_period
        return replace(record, whitelisted_until=until, expires=max(record.expires, until))

    async def sweep(self, now: float | None = None) -> int:
        """Delete expired entries; return how many. Run it every few minutes."""
        return await self.store.sweep(self.clock() if now is None else now)
