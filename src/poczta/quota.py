"""Storage quotas: each user's limits, the room left, and how a full mailbox is answered.

A user's messages in all of the user's mailboxes count together: their sizes (IMAP's
RFC822.SIZE, octets) and their number. The [quota] section sets the default limits,
`poczta user quota` a user's own (0 is no limit). The store keeps the usage of every
user in the transaction of each change (see `MailStore.quota_states`), so a check
is one read of a row per user.

Where the limits apply and how a full mailbox is answered:

- SMTP, at RCPT TO (MX and submission alike): a local recipient none of whose
  mailboxes has room (already at the limit, or without room for the SIZE= the client
  declared) gets ``452 4.2.2 Mailbox full``, or ``552 5.2.2`` when [quota] over_quota
  is "permanent". Refusing there is what lets each recipient be answered on its own.
- SMTP, at the end of DATA, the message's real size decides: when no recipient has
  room, the transaction gets the same 452 / 552; when only some have none, the others
  get the message and the sender a bounce (DSN, status 5.2.2) naming the ones whose
  mailbox is full, since after DATA SMTP has one reply for all recipients.
- IMAP APPEND and COPY that would pass a limit: ``NO [OVERQUOTA]`` and nothing is
  stored (a synchronising APPEND literal is refused before it is sent). MOVE within
  the user's mailboxes changes nothing and is always allowed; so are EXPUNGE and
  deleting, the ways out of a full mailbox. Reports (DSNs) to a local sender are filed
  whatever the quota, like Dovecot does for its own notices.
- Every refusal writes one log line, ``quota.refused``.

At the end of DATA, a store that can (`QuotaCheckingStore`: PostgreSQL) checks the
quota as part of the delivery, with no call of its own, and leaves out the users without
room (`Room`: the rule it applies); otherwise the check is a read of its own before the
store's write. On PostgreSQL a message for one user (the commonest) is checked against
the usage locked by the statement that stores it, so two arriving at once for the last
room are one stored, one refused, on one node or several; for a message to several users
or one that is queued too, and on SQLite, two stored at the same moment may both pass: a
limit can be overshot by the messages in flight at once, never by more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, runtime_checkable

from poczta.logs import log
from poczta.message import ParsedMessage
from poczta.queue.dsn import Report, ReportedRecipient, build_report
from poczta.sending_limits import Refusal
from poczta.store.base import (
    Accepted,
    DeliveryTarget,
    MailStore,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
    RecipientDsn,
    UserId,
)

__all__ = [
    "OverQuota",
    "QuotaCheckingStore",
    "QuotaLimits",
    "Quotas",
    "Room",
    "UserQuota",
    "over_quota_report",
    "storage_units",
    "user_quota",
]


def storage_units(octets: int) -> int:
    """`octets` in IMAP's STORAGE units of 1024 octets, rounded up (RFC 9208)."""
    return -(-octets // 1024)


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """The limits of one user: octets and messages; 0 is no limit."""

    storage: int = 0
    messages: int = 0

    def with_overrides(self, overrides: QuotaOverrides) -> QuotaLimits:
        changes = {
            name: value
            for name, value in (("storage", overrides.storage), ("messages", overrides.messages))
            if value is not None
        }
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class UserQuota:
    """One user's limits and usage."""

    limits: QuotaLimits
    usage: QuotaUsage

    def room_for(self, octets: int, messages: int = 1) -> bool:
        """True when `messages` more messages of `octets` in all stay within the limits."""
        storage, count = self.limits.storage, self.limits.messages
        if storage and self.usage.storage + octets > storage:
            return False
        return not (count and self.usage.messages + messages > count)

    def imap_resources(self) -> list[tuple[str, int, int]]:
        """(resource, usage, limit) of each limited resource, as IMAP QUOTA tells them
        (RFC 9208): STORAGE in units of 1024 octets (usage rounded up), MESSAGE."""
        resources = []
        if self.limits.storage:
            used = storage_units(self.usage.storage)
            resources.append(("STORAGE", used, self.limits.storage // 1024))
        if self.limits.messages:
            resources.append(("MESSAGE", self.usage.messages, self.limits.messages))
        return resources


@dataclass(frozen=True, slots=True)
class Room:
    """Whether a user, in a given quota state, has room for one message of `octets`:
    under the user's own limits, or else `defaults`. A store that checks it in the
    database (`QuotaCheckingStore`) applies the same rule there."""

    defaults: QuotaLimits
    octets: int

    def __call__(self, _user: UserId, state: QuotaState) -> bool:
        return user_quota(self.defaults, state).room_for(self.octets)


def user_quota(defaults: QuotaLimits, state: QuotaState) -> UserQuota:
    """A user's quota from the store's state of it: `defaults` under its own limits."""
    return UserQuota(defaults.with_overrides(state.overrides), state.usage)


@runtime_checkable
class QuotaCheckingStore(Protocol):
    """A store that checks the quota as part of a delivery: `room` is asked, with the
    usage read just before the delivery's write, whether each target's user has room
    (users the store has no quota state for count as having room); the others get no
    copy. Returns what was stored and the quota state of each user left out."""

    async def accept_within_quota(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
        room: Room,
    ) -> tuple[Accepted, Mapping[UserId, QuotaState]]: ...


class OverQuota(Exception):
    """No recipient of a message has room for it; the SMTP reply is `refusal`."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


class Quotas:
    """The quota of every user: the configured defaults over the store's usage and
    overrides; `permanent` chooses 552 5.2.2 over 452 4.2.2 for SMTP."""

    def __init__(
        self, store: MailStore, defaults: QuotaLimits | None = None, *, permanent: bool = False
    ) -> None:
        self.store = store
        self.defaults = defaults if defaults is not None else QuotaLimits()
        self.permanent = permanent

    async def of(self, user_ids: Sequence[UserId]) -> dict[UserId, UserQuota]:
        """The quota of each known user among `user_ids`, in one store read."""
        states = await self.store.quota_states(list(dict.fromkeys(user_ids)))
        return {user: self.quota_of(state) for user, state in states.items()}

    def quota_of(self, state: QuotaState) -> UserQuota:
        """A user's quota from the store's state of it: the defaults under its own limits."""
        return user_quota(self.defaults, state)

    def room_for(self, octets: int) -> Room:
        """Whether a user in a given state has room for one message of `octets`."""
        return Room(self.defaults, octets)

    async def without_room(
        self, user_ids: Sequence[UserId], octets: int
    ) -> dict[UserId, UserQuota]:
        """The users of `user_ids` that have no room for one message of `octets`."""
        quotas = await self.of(user_ids)
        return {user: quota for user, quota in quotas.items() if not quota.room_for(octets)}

    def refusal(self, address: str | None = None) -> Refusal:
        """The SMTP reply for a full mailbox (of `address`, at RCPT)."""
        text = f"<{address}>: Mailbox full" if address else "Mailbox full"
        if self.permanent:
            return Refusal(552, "5.2.2", text, "quota")
        return Refusal(452, "4.2.2", text, "quota")

    @staticmethod
    def refused(
        stage: str, user: str, quota: UserQuota, size: int, action: str = "refused"
    ) -> None:
        """The log line of one refusal: where, of whom, the usage and limits, and the size
        of what did not fit."""
        log(
            "quota.refused",
            stage=stage,
            user=user,
            action=action,
            size=size,
            storage=quota.usage.storage,
            storage_limit=quota.limits.storage,
            messages=quota.usage.messages,
            messages_limit=quota.limits.messages,
        )


def over_quota_report(
    *,
    hostname: str,
    sender: str,
    recipients: Sequence[tuple[str, RecipientDsn | None]],
    envid: str | None,
    ret: str | None,
    original: bytes,
    now: datetime,
) -> bytes | None:
    """The bounce telling `sender` that these recipients' mailboxes were full (None when
    none may be sent: the null sender, an automatic message, NOTIFY without FAILURE)."""
    reported = tuple(
        ReportedRecipient(
            address=address,
            original=dsn.orcpt.partition(";")[2].strip() if dsn and dsn.orcpt else None,
            action="failed",
            status="5.2.2",
            diagnostic=f"smtp; 552 5.2.2 <{address}>: Mailbox full",
            remote_mta=None,
            last_attempt=now,
            retry_until=None,
        )
        for address, dsn in recipients
        if dsn is None or dsn.notify is None or "FAILURE" in dsn.notify
    )
    if not reported:
        return None
    report = Report(hostname, sender, envid, ret, now, reported, original)
    return build_report(report, now)
