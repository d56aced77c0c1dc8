"""Which DSNs a queue entry owes its sender, and sending them (RFC 3461 NOTIFY, RFC 3464).

A failed recipient is reported unless its NOTIFY says otherwise (NEVER, or a list
without FAILURE); a delivered one only when NOTIFY has SUCCESS (as "relayed": the next
server need not speak DSN); a delay warning once per entry, for the recipients still
pending whose NOTIFY allows DELAY (or who gave no NOTIFY). Each recipient is marked
reported after its report is stored, so a crash in between repeats a report rather
than losing it. The report itself is built by `poczta.queue.dsn`; none goes to the
null sender, so a bounce is never bounced.

A report for a local sender is filed in their INBOX through `Delivery`; for a remote
one it is queued with the null sender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from poczta.delivery import Delivery, DeliveryPlan, RecipientKind
from poczta.logs import log
from poczta.queue.dsn import Report, ReportedRecipient, build_report
from poczta.store.base import DELIVERED, FAILED, PENDING, QueueEntry, QueueRecipient

__all__ = ["Reporter", "owes_report"]


def _wants(recipient: QueueRecipient, event: str) -> bool:
    notify = recipient.notify
    if notify is None:
        return event in ("FAILURE", "DELAY")
    return event in notify


def owes_report(recipient: QueueRecipient, status: str) -> bool:
    """Whether a recipient whose final state is `status` is owed a DSN (before it is sent)."""
    if status == FAILED:
        return _wants(recipient, "FAILURE")
    return status == DELIVERED and _wants(recipient, "SUCCESS")


def _diagnostic(recipient: QueueRecipient) -> str | None:
    if recipient.last_error is None:
        return None
    kind = "smtp" if recipient.reply_code is not None else "x-poczta"
    return f"{kind}; {recipient.last_error}"


class Reporter:
    """Builds and sends the DSNs of queue entries."""

    def __init__(
        self,
        delivery: Delivery,
        reporting_mta: str,
        lifetime: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.delivery = delivery
        self.store = delivery.store
        self.reporting_mta = reporting_mta
        self.lifetime = timedelta(seconds=lifetime)
        self.clock = clock

    async def final_reports(self, entry: QueueEntry, original: bytes) -> None:
        """Report the failed (and, when asked, delivered) recipients not reported yet."""
        unreported = [r for r in entry.recipients if r.status != PENDING and not r.reported]
        if not unreported:
            return
        owed = [r for r in unreported if owes_report(r, r.status)]
        failed = [r for r in owed if r.status == FAILED]
        relayed = [r for r in owed if r.status == DELIVERED]
        await self._send(entry, failed, "failed", original)
        await self._send(entry, relayed, "relayed", original)
        await self.store.mark_reported(entry.id, [r.address for r in unreported])

    async def delay_warning(self, entry: QueueEntry, original: bytes) -> None:
        delayed = [r for r in entry.pending() if _wants(r, "DELAY")]
        await self._send(entry, delayed, "delayed", original)
        await self.store.mark_reported(entry.id, (), delay_warning=True)

    async def _send(
        self, entry: QueueEntry, recipients: Sequence[QueueRecipient], action: str, original: bytes
    ) -> None:
        if not recipients or not entry.sender:
            return
        now = self.clock()
        report = Report(
            reporting_mta=self.reporting_mta,
            sender=entry.sender,
            envid=entry.envid,
            ret=entry.ret,
            arrival=entry.created,
            recipients=tuple(self._reported(entry, r, action) for r in recipients),
            original=original,
        )
        data = build_report(report, now)
        if data is None:
            return
        verdict = await self.delivery.classify(entry.sender)
        if verdict.kind is RecipientKind.UNKNOWN_USER:
            log("queue.dsn_dropped", id=entry.id, sender=entry.sender, reason="no such local user")
            return
        plan = DeliveryPlan()
        plan.add(verdict)
        await self.delivery.deliver(data, plan, "", now)
        log(
            "queue.dsn", id=entry.id, action=action, sender=entry.sender, recipients=len(recipients)
        )

    def _reported(self, entry: QueueEntry, r: QueueRecipient, action: str) -> ReportedRecipient:
        fallback = "2.0.0" if action == "relayed" else ("4.0.0" if action == "delayed" else "5.0.0")
        status = r.reply_enhanced or fallback
        if action == "failed" and status.startswith("2"):
            status = "5.0.0"
        return ReportedRecipient(
            address=r.address,
            original=r.orcpt.partition(";")[2].strip() if r.orcpt else None,  # "rfc822;a@b"
            action=action,
            status=status,
            diagnostic=_diagnostic(r),
            remote_mta=r.remote_mta,
            last_attempt=r.last_attempt,
            retry_until=entry.created + self.lifetime,
        )
