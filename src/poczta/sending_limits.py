"""Sending limits of submitted mail: messages per hour and recipients per message and day, per user.

So that a stolen password cannot turn the server into a spam cannon, every
authenticated user may submit at most `messages_per_hour` messages in any hour and
send to at most `recipients_per_day` recipients in any 24 hours, and a message may
have at most `recipients_per_message` recipients. The [submission] section sets the
defaults; `poczta user limits` overrides them per user (0 is no limit).

Where each limit is applied and how it is answered:

- At MAIL FROM, a user over the hourly message count or the daily recipient count is
  answered ``450 4.7.1`` (temporary: the client's queue retries once the window has
  moved on), with a text naming the limit.
- At RCPT TO, the recipient beyond `recipients_per_message` gets ``452 4.5.3`` (RFC
  5321 4.5.3.1.10: the client sends to the others and retries the rest in a new
  transaction), and the one that would pass the daily count ``450 4.7.1``.
- Each refused transaction writes one log line, ``submission.limit``.

The counts live in the store (`SendingStore`), so they hold across worker processes
and restarts: one row per user and minute with the messages and recipients accepted
in it, written once per accepted message (not per recipient). The hour is the
current minute and the 59 before it, the day the current minute and the 1439 before
it. Two transactions of one user checked at the same moment may both pass: a limit
can be overshot by the messages in flight at once, never by more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Protocol

from poczta.logs import log
from poczta.store.base import StoreUnavailable

__all__ = [
    "LIMIT_NAMES",
    "Allowance",
    "LimitOverrides",
    "Refusal",
    "SendingLimiter",
    "SendingLimits",
    "SendingState",
    "SendingStore",
    "SendingUsage",
    "mail_refusal",
    "recipient_refusal",
]

HOUR_MINUTES = 60
DAY_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class SendingLimits:
    """The limits of one user; 0 is no limit."""

    messages_per_hour: int = 200
    recipients_per_message: int = 100
    recipients_per_day: int = 1000

    def with_overrides(self, overrides: LimitOverrides) -> SendingLimits:
        changes = {
            f.name: getattr(overrides, f.name)
            for f in fields(overrides)
            if getattr(overrides, f.name) is not None
        }
        return replace(self, **changes)


LIMIT_NAMES = tuple(f.name for f in fields(SendingLimits))


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """A user's own limits; None keeps the configured default."""

    messages_per_hour: int | None = None
    recipients_per_message: int | None = None
    recipients_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class SendingUsage:
    """What a user has sent lately."""

    messages_last_hour: int = 0
    recipients_last_day: int = 0


@dataclass(frozen=True, slots=True)
class SendingState:
    """A user's overrides and usage, read together."""

    overrides: LimitOverrides
    usage: SendingUsage


class SendingStore(Protocol):
    """Where the overrides and counts live; shared by every process of the server."""

    async def sending_state(self, user: str, now: float) -> SendingState:
        """The overrides and usage of `user` at `now` (seconds since the epoch); defaults
        and zero usage for an unknown user."""
        ...

    async def record_sent(self, user: str, recipients: int, now: float) -> None:
        """Count one accepted message of `user` with `recipients` recipients at `now`."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """The SMTP reply to a transaction over a limit."""

    code: int
    enhanced: str
    text: str
    limit: str  # which limit, for the log line


def mail_refusal(user: str, limits: SendingLimits, usage: SendingUsage) -> Refusal | None:
    """Why `user` may not start another message now, or None."""
    hourly = limits.messages_per_hour
    if hourly and usage.messages_last_hour >= hourly:
        text = f"{user} has sent {hourly} messages in the last hour, the limit; try again later"
        return Refusal(450, "4.7.1", text, "messages_per_hour")
    daily = limits.recipients_per_day
    if daily and usage.recipients_last_day >= daily:
        text = f"{user} has sent to {daily} recipients today, the limit; try again later"
        return Refusal(450, "4.7.1", text, "recipients_per_day")
    return None


def recipient_refusal(
    user: str, limits: SendingLimits, usage: SendingUsage, accepted: int
) -> Refusal | None:
    """Why one more recipient may not be added to a message of `user` that has `accepted`
    recipients so far, or None."""
    per_message = limits.recipients_per_message
    if per_message and accepted >= per_message:
        text = f"Too many recipients: at most {per_message} per message"
        return Refusal(452, "4.5.3", text, "recipients_per_message")
    daily = limits.recipients_per_day
    if daily and usage.recipients_last_day + accepted >= daily:
        text = f"{user} has reached the limit of {daily} recipients a day; try again later"
        return Refusal(450, "4.7.1", text, "recipients_per_day")
    return None


_UNAVAILABLE = Refusal(451, "4.3.0", "Temporary lookup failure, try again later", "unavailable")


class SendingLimiter:
    """The limits of every user, over a `SendingStore` and a clock."""

    def __init__(
        self,
        store: SendingStore,
        defaults: SendingLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.clock = clock

    async def at_mail(self, user: str) -> Allowance:
        """What `user` may send in the transaction MAIL FROM starts."""
        try:
            state = await self.store.sending_state(user, self.clock())
        except StoreUnavailable as exc:
            log("submission.limit_unknown", user=user, error=exc)
            return Allowance(self, user, self.defaults, SendingUsage(), _UNAVAILABLE)
        limits = self.defaults.with_overrides(state.overrides)
        allowance = Allowance(self, user, limits, state.usage, None)
        allowance.refusal = mail_refusal(user, limits, state.usage)
        if allowance.refusal is not None:
            allowance.logged(allowance.refusal)
        return allowance


@dataclass
class Allowance:
    """One transaction of one user: what it may still add, and the count once it is sent."""

    limiter: SendingLimiter
    user: str
    limits: SendingLimits
    usage: SendingUsage
    refusal: Refusal | None  # the transaction may not start at all
    recipients: int = 0
    _logged: bool = False

    def add_recipient(self) -> Refusal | None:
        """The refusal of one more recipient, or None (and it is counted)."""
        refusal = recipient_refusal(self.user, self.limits, self.usage, self.recipients)
        if refusal is not None:
            self.logged(refusal)
            return refusal
        self.recipients += 1
        return None

    async def sent(self, recipients: int) -> None:
        """Count the accepted message; a store failure only costs a log line (the message
        is already accepted)."""
        try:
            await self.limiter.store.record_sent(self.user, recipients, self.limiter.clock())
        except StoreUnavailable as exc:
            log("submission.count_failed", user=self.user, error=exc)

    def logged(self, refusal: Refusal) -> None:
        """Log the first refusal of the transaction (a client may try many RCPTs)."""
        if self._logged:
            return
        self._logged = True
        log(
            "submission.limit",
            user=self.user,
            limit=refusal.limit,
            value=getattr(self.limits, refusal.limit, None),
            messages_last_hour=self.usage.messages_last_hour,
            recipients_last_day=self.usage.recipients_last_day,
            recipients=self.recipients,
        )
