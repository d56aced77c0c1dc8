"""Delivery status notifications (RFC 3464, RFC 3461): the bounce, delay and success reports.

`build_report` turns a `Report` into a multipart/report message for the envelope sender:
a readable explanation, a message/delivery-status part with one block per recipient,
and the original message (RET=FULL) or its header section. Pure: no I/O, no clock.
A report to the null sender is never built (a bounce is never bounced).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

__all__ = ["Report", "ReportedRecipient", "build_report"]


@dataclass(frozen=True)
class ReportedRecipient:
    address: str
    original: str | None  # the ORCPT, "rfc822;addr"
    action: str  # "failed" | "delayed" | "delivered" | "relayed"
    status: str  # "5.1.1"
    diagnostic: str | None  # "smtp; 550 5.1.1 user unknown"
    remote_mta: str | None
    last_attempt: datetime | None
    retry_until: datetime | None


@dataclass(frozen=True)
class Report:
    reporting_mta: str
    sender: str
    envid: str | None
    ret: str | None  # "FULL" | "HDRS" | None
    arrival: datetime
    recipients: tuple[ReportedRecipient, ...]
    original: bytes


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
_EXPLANATIONS = {
    "failed": "could not be delivered to the following recipients; it was given up:",
    "delayed": "has not been delivered yet to the following recipients; delivery is retried:",
    "delivered": "was delivered to the following recipients:",
    "relayed": "was passed on to the following recipients' servers:",
}


def _clean(text: str) -> str:
    """A field value on one line, whatever came from a remote reply."""
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def _recipient_block(recipient: ReportedRecipient) -> list[str]:
    lines = []
    if recipient.original:
        kind, _, address = recipient.original.partition(";")
        lines.append(f"Original-Recipient: {_clean(kind)};{_clean(address)}")
    lines += [
        f"Final-Recipient: rfc822;{_clean(recipient.address)}",
        f"Action: {recipient.action}",
        f"Status: {recipient.status}",
    ]
    if recipient.remote_mta:
        lines.append(f"Remote-MTA: dns;{_clean(recipient.remote_mta)}")
    if recipient.diagnostic:
        lines.append(f"Diagnostic-Code: {_clean(recipient.diagnostic)}")
    if recipient.last_attempt is not None:
        lines.append(f"Last-Attempt-Date: {format_datetime(recipient.last_attempt)}")
    if recipient.retry_until is not None and recipient.action == "delayed":
        lines.append(f"Will-Retry-Until: {format_datetime(recipient.retry_until)}")
    return lines


def _header_section(message: bytes) -> bytes:
    for end in (b"\r\n\r\n", b"\n\n"):
        index = message.find(end)
        if index >= 0:
            return message[: index + len(end)]
    return message


def build_report(report: Report, now: datetime) -> bytes | None:
    """The DSN message, CRLF line ends; None when there is nothing to send."""
    if not report.sender or not report.recipients:
        return None
    action = report.recipients[0].action
    boundary = f"poczta-dsn-{secrets.token_hex(8)}"
    mta = _clean(report.reporting_mta)
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_clean(report.sender)}>",
        f"Subject: {_SUBJECTS.get(action, 'Mail Delivery Report')}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{secrets.token_hex(12)}@{mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    explanation = [
        f"This is the mail system at {mta}.",
        "",
        f"Your message {_EXPLANATIONS.get(action, 'has the following status:')}",
        "",
    ]
    for recipient in report.recipients:
        why = f": {_clean(recipient.diagnostic)}" if recipient.diagnostic else ""
        explanation.append(f"  <{_clean(recipient.address)}> ({recipient.status}){why}")
    status = [f"Reporting-MTA: dns;{mta}"]
    if report.envid:
        status.append(f"Original-Envelope-Id: {_clean(report.envid)}")
    status.append(f"Arrival-Date: {format_datetime(report.arrival)}")
    for recipient in report.recipients:
        status += ["", *_recipient_block(recipient)]
    full = report.ret == "FULL"
    original = report.original if full else _header_section(report.original)
    kind = "message/rfc822" if full else "text/rfc822-headers"
    parts = [
        "\r\n".join(head),
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "\r\n".join(explanation),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "\r\n".join(status),
        "",
        f"--{boundary}",
        f"Content-Type: {kind}",
        "",
        "",
    ]
    text = "\r\n".join(parts).encode("utf-8", "replace")
    body = original if original.endswith(b"\n") else original + b"\r\n"
    return text + body + f"\r\n--{boundary}--\r\n".encode()
