"""Local delivery: which recipients are ours, who may send as whom, and filing a message.

Recipients resolve by the rules of `poczta.routing` (exact user, alias, plus-addressing
`user+tag`, catch-all `@domain`) over the store's lookups; answers are cached for a few
seconds (`RecipientCache`), so a busy MX asks the store once per recipient and interval,
not once per message (and once, for a user's address, is one store round trip). An
admin's change (new user, removed alias) is seen within that interval, also by other
nodes sharing the database. One message to several local users is stored once (one blob)
and linked into each INBOX (or each Junk mailbox, when the checks' verdict says junk);
remote recipients go to the durable outbound queue in the same call.

Return-Path (RFC 5321 4.4) belongs to final delivery, so the two copies differ: the
local one starts with `Return-Path: <envelope sender>` (`<>` for the null sender),
and any Return-Path field the client sent is deleted from it; the queued one is the
message as received (with our trace headers), since a relaying server must neither
add a Return-Path nor inspect the message for one, and the final hop replaces it.
A message with local and remote recipients is therefore two bodies and two commits:
the local copies first, so a failure between them (the client is told to retry) can
duplicate mail in a local mailbox but never send a second copy out.

Quotas (`poczta.quota`) are checked here for SMTP: `recipient_quota` at RCPT, and
`deliver(..., quota=True)` with the message's final size; reports are never refused.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from poczta.accounts import normalize_address
from poczta.logs import log
from poczta.message import HeaderSection, parse_message, split_header
from poczta.quota import OverQuota, QuotaCheckingStore, Quotas, UserQuota, over_quota_report
from poczta.routing import resolve_recipient, route_recipient
from poczta.sending_limits import Refusal
from poczta.store.base import (
    DeliveryTarget,
    MailStore,
    Outbound,
    RecipientDsn,
    StoreUnavailable,
    UserId,
)
from poczta.trace import final_delivery_copy

#: Where junk goes: named by its special use, so a renamed Junk folder still receives it.
JUNK_MAILBOX = "\\Junk"


class RecipientKind(enum.Enum):
    LOCAL = "local"  # a user or alias of one of our domains
    REMOTE = "remote"  # a domain that is not ours
    UNKNOWN_USER = "unknown-user"  # our domain, but no such user or alias


@dataclass(frozen=True)
class RecipientVerdict:
    kind: RecipientKind
    address: str
    local_user_ids: tuple[UserId, ...] = ()
    remote_addresses: tuple[str, ...] = ()


@dataclass
class DeliveryPlan:
    """Everything a transaction's accepted recipients resolved to."""

    user_ids: list[UserId] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    junk: bool = False  # the checks' verdict: local copies go to each user's Junk mailbox
    remote_dsn: dict[str, RecipientDsn] = field(default_factory=dict)  # NOTIFY, ORCPT
    envid: str | None = None  # the transaction's DSN parameters (RFC 3461)
    ret: str | None = None
    # each local user's RCPT address and its DSN parameters (for a bounce: mailbox full)
    local_rcpts: dict[UserId, tuple[str, RecipientDsn | None]] = field(default_factory=dict)

    def add(self, verdict: RecipientVerdict, dsn: RecipientDsn | None = None) -> None:
        """Add a recipient's destinations; a remote one keeps the RCPT's DSN parameters
        (an alias expanded to it gets the address it was sent to as its ORCPT)."""
        for user_id in verdict.local_user_ids:
            if user_id not in self.user_ids:
                self.user_ids.append(user_id)
                self.local_rcpts[user_id] = (verdict.address, dsn)
        for address in verdict.remote_addresses:
            if address not in self.remote:
                self.remote.append(address)
                orcpt = dsn.orcpt if dsn is not None else None
                if orcpt is None and address != verdict.address:
                    orcpt = f"rfc822;{verdict.address}"
                notify = dsn.notify if dsn is not None else None
                if notify is not None or orcpt is not None:
                    self.remote_dsn[address] = RecipientDsn(notify, orcpt)


#: Seconds a recipient's verdict is kept: an account or alias added, changed or removed
#: (on this node or another) is seen by RCPT within this, well inside the 5 s an admin
#: is promised.
RECIPIENT_TTL = 2.0


class RecipientCache:
    """Recent recipient verdicts, each kept for `ttl` seconds; at most `max_entries`."""

    def __init__(self, ttl: float = RECIPIENT_TTL, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, RecipientVerdict]] = {}

    def get(self, address: str) -> RecipientVerdict | None:
        entry = self._entries.get(address)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[address]
            return None
        return entry[1]

    def put(self, address: str, verdict: RecipientVerdict) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; a refill costs one lookup each
        self._entries[address] = (time.monotonic() + self.ttl, verdict)


class Delivery:
    """Answers recipient and sender questions and stores accepted messages."""

    def __init__(
        self,
        store: MailStore,
        cache_ttl: float = RECIPIENT_TTL,
        *,
        quotas: Quotas | None = None,
        hostname: str = "localhost",
    ) -> None:
        self.store = store
        self.cache = RecipientCache(cache_ttl)
        self.quotas = quotas if quotas is not None else Quotas(store)
        self.hostname = hostname  # the reporting MTA of bounces
        self.on_queued: Callable[[], None] | None = None  # told of each message queued

    async def classify(self, address: str) -> RecipientVerdict:
        """Where mail for `address` goes (cached for a few seconds)."""
        cached = self.cache.get(address)
        if cached is None:
            cached = await self._classify(address)
            self.cache.put(address, cached)
        return cached

    async def _classify(self, address: str) -> RecipientVerdict:
        try:
            normalized = normalize_address(address)
        except ValueError:
            return RecipientVerdict(RecipientKind.UNKNOWN_USER, address)
        route = await route_recipient(self.store, normalized)
        if not route.local_domain:
            return RecipientVerdict(RecipientKind.REMOTE, normalized, (), (normalized,))
        resolution = route.resolution
        if resolution is None or not (resolution.local_users or resolution.remote_addresses):
            return RecipientVerdict(RecipientKind.UNKNOWN_USER, normalized)
        return RecipientVerdict(
            RecipientKind.LOCAL,
            normalized,
            tuple(user.id for user in resolution.local_users),
            tuple(resolution.remote_addresses),
        )

    async def may_send_as(self, user: str, sender: str) -> bool:
        """True when `sender` is the user's own address or an alias (incl. plus form) of it."""
        try:
            sender = normalize_address(sender)
        except ValueError:
            return False
        if sender == normalize_address(user):
            return True
        resolution = await resolve_recipient(self.store, sender)
        if resolution is None:
            return False
        return [u.address for u in resolution.local_users] == [normalize_address(user)]

    async def recipient_quota(
        self, verdict: RecipientVerdict, declared_size: int | None = None
    ) -> Refusal | None:
        """At RCPT: the refusal of a local recipient none of whose users has room for a
        message (of the SIZE= the client declared), or None."""
        users = verdict.local_user_ids
        if verdict.kind is not RecipientKind.LOCAL or verdict.remote_addresses or not users:
            return None
        octets = max(declared_size or 0, 1)
        quotas = await self.quotas.of(users)
        if any(user not in quotas or quotas[user].room_for(octets) for user in users):
            return None
        for user in users:
            self.quotas.refused("rcpt", verdict.address, quotas[user], size=declared_size or 0)
        return self.quotas.refusal(verdict.address)

    async def deliver(
        self,
        data: bytes,
        plan: DeliveryPlan,
        sender: str,
        now: datetime | None = None,
        *,
        header: HeaderSection | None = None,
        quota: bool = False,
    ) -> None:
        """Durably store `data` for every local user and queue it for remote ones.

        Local copies get our Return-Path (see the module's docstring) and go to INBOX,
        or to the mailbox with the \\Junk special use when the plan says so. `header`
        is the header section of `data` when it is already split. With `quota`, a user
        without room gets no copy (the sender a bounce), and OverQuota is raised when no
        recipient at all has room."""
        now = now or datetime.now(UTC)
        header = header if header is not None else split_header(data)
        if plan.user_ids:
            local, local_header = final_delivery_copy(data, header, sender)
            full = await self._store_local(plan, local, local_header, now, quota=quota)
            if full and len(full) == len(plan.user_ids) and not plan.remote:
                self._log_full(plan, full, len(local), "refused")
                raise OverQuota(self.quotas.refusal())
            if full:
                self._log_full(plan, full, len(local), "bounced")
                await self._bounce_full(plan, full, sender, local, now)
        if plan.remote:
            outbound = Outbound(sender, tuple(plan.remote), plan.envid, plan.ret, plan.remote_dsn)
            await self.store.accept(data, parse_message(data, header), now, (), outbound)
            if self.on_queued is not None:
                self.on_queued()

    async def _store_local(
        self,
        plan: DeliveryPlan,
        local: bytes,
        header: HeaderSection,
        now: datetime,
        *,
        quota: bool,
    ) -> Mapping[UserId, UserQuota]:
        """Store the local copies for the users with room (all, without `quota`); the
        quota of each user left out. Nothing is stored when no user has room and nothing
        is remote (the caller refuses the message)."""
        mailbox = JUNK_MAILBOX if plan.junk else "INBOX"
        targets = [DeliveryTarget(user, mailbox) for user in plan.user_ids]
        if quota and isinstance(self.store, QuotaCheckingStore):
            room = self.quotas.room_for(len(local))
            parsed = parse_message(local, header)
            _, left_out = await self.store.accept_within_quota(local, parsed, now, targets, room)
            return {user: self.quotas.quota_of(state) for user, state in left_out.items()}
        full = await self.quotas.without_room(plan.user_ids, len(local)) if quota else {}
        if full and len(full) == len(plan.user_ids) and not plan.remote:
            return full
        kept = [target for target in targets if target.user_id not in full]
        if kept:
            await self.store.accept(local, parse_message(local, header), now, kept)
        return full

    def _log_full(
        self, plan: DeliveryPlan, full: Mapping[UserId, UserQuota], size: int, action: str
    ) -> None:
        for user, quota in full.items():
            address = plan.local_rcpts.get(user, (str(user), None))[0]
            self.quotas.refused("data", address, quota, size=size, action=action)

    async def _bounce_full(
        self, plan: DeliveryPlan, full: Iterable[UserId], sender: str, local: bytes, now: datetime
    ) -> None:
        """Tell `sender` that these recipients did not get the message (mailbox full)."""
        recipients = [plan.local_rcpts.get(user, (str(user), None)) for user in full]
        report = over_quota_report(
            hostname=self.hostname,
            sender=sender,
            recipients=recipients,
            envid=plan.envid,
            ret=plan.ret,
            original=local,
            now=now,
        )
        if report is None:
            return
        verdict = await self.classify(sender)
        if verdict.kind is RecipientKind.UNKNOWN_USER:
            log("quota.bounce_dropped", sender=sender, reason="no such local user")
            return
        bounce_plan = DeliveryPlan()
        bounce_plan.add(verdict)
        try:
            await self.deliver(report, bounce_plan, "", now)
        except StoreUnavailable as exc:  # the others have the message: no retry of it all
            log("quota.bounce_failed", sender=sender, error=exc)
