"""The readable part of a delivery report: what became of a message, told to its sender.

Written for someone who has never heard of SMTP: what happened, to whom, in a
sentence drawn from the enhanced status code (RFC 3463), the receiving server's own
answer quoted as it was given, and what to do next. Lines are wrapped at 76
columns; a word too long for that stays whole up to a safe line length.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Protocol

__all__ = ["explanation", "report_date", "status_meaning", "subject"]

WIDTH = 76
_HARD_LINE = 900  # characters; far under 998 octets for ASCII, the common case

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
    "expanded": "Successful Mail Delivery Report",
}

_INTROS = {
    "failed": (
        "Your message could not be delivered to the recipients listed below. "
        "The mail system has given up and will not try again."
    ),
    "delayed": (
        "Your message has not been delivered yet to the recipients listed below. "
        "This is only a warning: you do not need to send the message again. "
        "The mail system keeps trying, and you will hear from it again only if "
        "it finally has to give up."
    ),
    "delivered": "Your message was delivered to the recipients listed below.",
    "relayed": (
        "Your message was handed on to the mail system of the recipients listed "
        "below. That system does not confirm deliveries, so this is the last "
        "report you will get about them."
    ),
    "expanded": (
        "Your message was delivered to the recipients listed below, which are "
        "lists that pass it on to their members."
    ),
}

_ADVICE = {
    "failed": (
        "What you can do: check each address above for typing mistakes and send "
        "the message again to the corrected address. If an address is right, the "
        "problem is on the recipient's side; reach them another way (a phone call, "
        "another address) and tell them what the answer above says. If you do not "
        "understand the answer, forward this report to your mail administrator."
    ),
    "delayed": (
        "What you can do: nothing yet. If the message is urgent, reach the recipient another way."
    ),
}

# Sentences for the enhanced status codes people meet most (RFC 3463, RFC 7505).
_KNOWN = {
    "1.1": "the address does not exist at the receiving mail server",
    "1.2": "the domain of the address does not exist or accepts no mail",
    "1.3": "the address is not written correctly",
    "1.6": "the recipient has moved and left no forwarding address",
    "1.10": "the domain of the address says it accepts no mail at all",
    "2.1": "the recipient's mailbox is disabled and takes no mail",
    "2.2": "the recipient's mailbox is full",
    "2.3": "the message is larger than the recipient's mailbox accepts",
    "3.4": "the message is larger than the receiving mail server accepts",
    "4.1": "the receiving mail server did not answer",
    "4.2": "the connection to the receiving mail server was lost",
    "4.4": "no mail server could be found for the recipient's domain",
    "4.6": "the message went round in a loop between mail servers",
    "4.7": "the message could not be delivered in the time allowed",
    "6.7": (
        "the address needs international (UTF-8) mail, which the receiving server does not support"
    ),
    "7.1": "the receiving mail server refused the message",
    "7.26": "the message failed the sender-authentication checks of the receiving server",
}
_CLASSES = {
    "0": "the message could not be handled",
    "1": "something is wrong with the address",
    "2": "something is wrong with the recipient's mailbox",
    "3": "the receiving mail system could not take the message",
    "4": "there was a network or routing problem on the way",
    "5": "the mail servers did not understand each other",
    "6": "the receiving server could not handle the content of the message",
    "7": "the receiving mail server refused the message for policy or security reasons",
}
_DELIVERED_MEANING = "it was delivered"


class Recipient(Protocol):
    """What the explanation needs of a reported recipient."""

    @property
    def address(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def retry_until(self) -> datetime | None: ...


def subject(actions: Sequence[str]) -> str:
    """The Subject of a report with these actions: the worst news first."""
    for action in ("failed", "delayed"):
        if action in actions:
            return SUBJECTS[action]
    return SUBJECTS["delivered"]


def status_meaning(status: str) -> str:
    """A sentence (without capital or stop) for an enhanced status code."""
    klass, _, detail = status.partition(".")
    if klass == "2":
        return _DELIVERED_MEANING
    known = _KNOWN.get(detail)
    if known is not None:
        return known
    return _CLASSES.get(detail.partition(".")[0], _CLASSES["0"])


def _paragraph(text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    out: list[str] = []
    for line in lines or [indent]:
        while len(line) > _HARD_LINE:
            out.append(line[:_HARD_LINE])
            line = indent + line[_HARD_LINE:]
        out.append(line)
    return out


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def report_date(value: datetime) -> str:
    """An RFC 5322 date; a naive `value` is taken as UTC."""
    return format_datetime(_aware(value))


def _recipient_lines(
    recipient: Recipient, answer: str | None, server: str | None, now: datetime
) -> list[str]:
    lines = [f"  <{recipient.address}>"]
    if recipient.action in ("failed", "delayed"):
        lines += _paragraph(f"What went wrong: {status_meaning(recipient.status)}.", "    ")
    if answer:
        who = f"The receiving mail server ({server})" if server else "The receiving mail server"
        lines += _paragraph(f"{who} answered:", "    ")
        lines += _paragraph(answer, "      ")
    if recipient.action == "delayed" and recipient.retry_until is not None:
        until, now = _aware(recipient.retry_until), _aware(now)
        if until > now:
            lines += _paragraph(f"The mail system keeps trying until {report_date(until)}.", "    ")
    return lines


def explanation(
    hostname: str,
    recipients: Sequence[tuple[Recipient, str | None, str | None]],
    returned: str,
    now: datetime,
) -> str:
    """The text part of a report: `recipients` as (recipient, answer, server), both already
    fit for display; `returned` says what of the original is attached. Lines end in LF."""
    lines = [f"This is the mail system at {hostname}.", ""]
    order = ("failed", "delayed", "delivered", "relayed", "expanded")
    for action in order:
        group = [r for r in recipients if r[0].action == action]
        if not group:
            continue
        lines += _paragraph(_INTROS[action])
        lines.append("")
        for recipient, answer, server in group:
            lines += _recipient_lines(recipient, answer, server, now)
            lines.append("")
        if action in _ADVICE:
            lines += _paragraph(_ADVICE[action])
            lines.append("")
    lines += _paragraph(returned)
    lines.append("")
    lines += _paragraph(
        "This report was written automatically; please do not reply to it. "
        "The technical details follow in the next part."
    )
    return "\n".join(lines) + "\n"
