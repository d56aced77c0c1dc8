"""The MTA-STS policy in force for each destination domain: TXT lookup, fetch, cache.

`MtaStsPolicies.policy(domain)` is asked before every delivery to a domain's MX hosts.
It follows RFC 8461 5.1:

- The ``_mta-sts.DOMAIN`` TXT record is looked up (the resolver caches it for its TTL).
  When it names the id of the cached policy, that policy is used while it lasts;
  a new id, or no usable cached policy, means fetching the policy.
- A fetched policy is kept in the store (so a restart keeps it) with the record's id,
  until its max_age runs out. It is fetched again when an unchanged id's policy
  is older than half its max_age (at most a day), so that a domain keeping its
  policy never sees it lapse.
- When the record is missing, malformed or the lookup fails, or the fetch fails, a
  cached policy that has not expired is still used; without one the domain has no
  policy (opportunistic TLS), as the RFC asks.
- A failed fetch is not tried again for `retry_after` seconds (the cached policy or
  none meanwhile), so a domain whose policy host is down costs one try, not one per
  message. Concurrent deliveries to a domain wait for one lookup.

Time comes from the injected `clock` (the queue runner's). A line is logged for each
fetch (`mta_sts.fetched` or `mta_sts.fetch_failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from poczta.dns import DnsError, NXDomain, Resolver
from poczta.logs import log
from poczta.queue.mta_sts import StsError, StsPolicy, StsRecord, parse_policy, select_record
from poczta.queue.mta_sts_fetch import PolicyFetchError
from poczta.store.base import CachedStsPolicy, StoreError

__all__ = ["MtaStsPolicies", "PolicySource", "PolicyStore"]

REFRESH_AFTER = 86_400.0  # seconds: the longest an unchanged policy goes without a fetch
MEMORY_LIMIT = 10_000  # domains whose cached policy (or its absence) is kept in memory


class PolicyStore(Protocol):
    """What the cache needs of the mail store."""

    async def mta_sts_policy(self, domain: str) -> CachedStsPolicy | None: ...
    async def save_mta_sts_policy(self, policy: CachedStsPolicy, now: datetime) -> None: ...


class PolicySource(Protocol):
    """Where policies come from (`PolicyFetcher`, or a test's stand-in)."""

    async def fetch(self, domain: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Known:
    cached: CachedStsPolicy
    policy: StsPolicy


class MtaStsPolicies:
    """Policies of destination domains, kept in memory and in the store."""

    def __init__(
        self,
        resolver: Resolver,
        store: PolicyStore,
        source: PolicySource,
        clock: Callable[[], datetime],
        *,
        retry_after: float = 300.0,
    ) -> None:
        self.resolver = resolver
        self.store = store
        self.source = source
        self.clock = clock
        self.retry_after = timedelta(seconds=retry_after)
        self._memory: OrderedDict[str, _Known | None] = OrderedDict()
        self._failed: dict[str, datetime] = {}  # domain -> no fetch before then
        self._lookups: dict[str, asyncio.Future[StsPolicy | None]] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy to apply to mail for `domain` now, or None (opportunistic TLS)."""
        domain = domain.rstrip(".").lower()
        if domain.startswith("["):
            return None  # an address literal has no DNS, so no policy
        lookup = self._lookups.get(domain)
        if lookup is None:  # the first of concurrent deliveries asks; the others wait
            lookup = asyncio.ensure_future(self._policy(domain))
            self._lookups[domain] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(domain, None))
        return await asyncio.shield(lookup)

    async def _policy(self, domain: str) -> StsPolicy | None:
        now = self.clock()
        known = await self._known(domain)
        live = known if known is not None and known.cached.expires > now else None
        record = await self._record(domain)
        if not isinstance(record, StsRecord):
            return live.policy if live is not None else None
        if live is not None and live.cached.policy_id == record.id and not _stale(live, now):
            return live.policy
        if self._failed.get(domain, now) > now:
            return live.policy if live is not None else None
        fetched = await self._fetch(domain, record, now)
        if fetched is None:
            self._failed = {d: t for d, t in self._failed.items() if t > now}
            self._failed[domain] = now + self.retry_after
            return live.policy if live is not None else None
        self._failed.pop(domain, None)
        return fetched.policy

    async def _record(self, domain: str) -> StsRecord | StsError:
        try:
            texts = await self.resolver.txt(f"_mta-sts.{domain}")
        except NXDomain:
            return StsError("no _mta-sts TXT record")
        except DnsError as exc:
            return StsError(f"_mta-sts TXT lookup failed: {type(exc).__name__}")
        return select_record(texts)

    async def _fetch(self, domain: str, record: StsRecord, now: datetime) -> _Known | None:
        try:
            body = await self.source.fetch(domain)
        except PolicyFetchError as exc:
            log("mta_sts.fetch_failed", logging.WARNING, domain=domain, error=str(exc))
            return None
        parsed = parse_policy(body)
        if isinstance(parsed, StsError):
            log("mta_sts.fetch_failed", logging.WARNING, domain=domain, error=parsed.text)
            return None
        expires = now + timedelta(seconds=parsed.max_age)
        text = body.decode("utf-8")
        known = _Known(CachedStsPolicy(domain, record.id, text, now, expires), parsed)
        try:
            await self.store.save_mta_sts_policy(known.cached, now)
        except StoreError as exc:  # used all the same; fetched again after a restart
            log("mta_sts.store_failed", logging.WARNING, domain=domain, error=str(exc))
        self._remember(domain, known)
        mx, mode, age = ",".join(parsed.mx), parsed.mode.value, parsed.max_age
        log("mta_sts.fetched", domain=domain, id=record.id, mode=mode, mx=mx, max_age=age)
        return known

    async def _known(self, domain: str) -> _Known | None:
        if domain in self._memory:
            self._memory.move_to_end(domain)
            return self._memory[domain]
        try:
            cached = await self.store.mta_sts_policy(domain)
        except StoreError as exc:
            log("mta_sts.store_failed", logging.WARNING, domain=domain, error=str(exc))
            return None
        known = None
        if cached is not None:
            parsed = parse_policy(cached.text.encode("utf-8"))
            if isinstance(parsed, StsPolicy):
                known = _Known(cached, parsed)
        self._remember(domain, known)
        return known

    def _remember(self, domain: str, known: _Known | None) -> None:
        self._memory[domain] = known
        self._memory.move_to_end(domain)
        while len(self._memory) > MEMORY_LIMIT:
            self._memory.popitem(last=False)


def _stale(known: _Known, now: datetime) -> bool:
    """Whether an unchanged policy is due for a fetch that extends its life."""
    refresh = min(known.policy.max_age / 2, REFRESH_AFTER)
    return now >= known.cached.fetched + timedelta(seconds=refresh)
