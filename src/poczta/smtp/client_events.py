"""What the SMTP client core is given and hands back: message, policies, outcomes, events.

Outcomes are values. A recipient ends each transaction DELIVERED, TEMPORARY (try again
later, possibly at the next MX) or PERMANENT (bounce), with the reply that decided it
when a server said something; `Outcome.diagnostic_code` is the DSN Diagnostic-Code
("smtp; 550 5.1.1 ..."). A `HostFailed` event means this host could not be used (no
greeting, TLS missing, a lost connection, a 421, garbage): the driver tries the next
MX for the recipients still TEMPORARY. A recipient refused with 452 at RCPT
(`Outcome.too_many_recipients`) is TEMPORARY too; the driver may send it in a new
transaction at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from poczta.smtp.events import Close, StartTls
from poczta.smtp.replies import Reply


class TlsPolicy(enum.Enum):
    """What the driver asks of TLS for this connection."""

    NONE = "none"  # never STARTTLS (a retry in plaintext after a failed handshake)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS whenever it is offered
    REQUIRED = "required"  # MTA-STS enforce, DANE, a smarthost: no TLS, no mail


@dataclass(frozen=True, slots=True)
class Credentials:
    """AUTH PLAIN / LOGIN credentials for a smarthost."""

    username: str
    password: str = field(repr=False)


class Wait(enum.Enum):
    """What the client is waiting for, with the RFC 5321 4.5.3.2 timeout (seconds) for it."""

    GREETING = ("greeting", 300.0)
    COMMAND = ("command reply", 300.0)  # EHLO, STARTTLS, AUTH, RSET, QUIT: the same 5 min
    TLS = ("TLS handshake", 300.0)
    MAIL = ("MAIL FROM reply", 300.0)
    RCPT = ("RCPT TO reply", 300.0)
    DATA_INIT = ("DATA reply", 120.0)
    DATA_BLOCK = ("message data write", 180.0)
    DATA_END = ("end of data reply", 600.0)
    IDLE = ("next message", None)  # nothing outstanding: the driver's own idle limit
    CLOSED = ("closed", None)

    def __init__(self, label: str, timeout: float | None) -> None:
        self.label = label
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    """One recipient with its DSN parameters (RFC 3461), sent when the server offers DSN."""

    address: str
    notify: tuple[str, ...] | None = None  # ("NEVER",) or some of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # the original recipient address


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message for one destination: envelope and the raw body (any line endings).

    `smtputf8` asks for the SMTPUTF8 parameter although every address is ASCII (the
    header has UTF-8, RFC 6532); a UTF-8 address asks for it anyway.
    """

    sender: str
    recipients: tuple[OutboundRecipient, ...]
    body: bytes
    ret: str | None = None  # FULL or HDRS
    envid: str | None = None
    smtputf8: bool = False

    @classmethod
    def to(cls, sender: str, recipients: list[str], body: bytes) -> OutboundMessage:
        """A message without DSN parameters."""
        return cls(sender, tuple(OutboundRecipient(r) for r in recipients), body)


class DeliveryStatus(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How something ended: status, enhanced status code, text, the server's reply if any."""

    status: DeliveryStatus
    enhanced: str
    text: str
    reply: Reply | None = None
    stage: str = ""  # the command the reply answered, e.g. "RCPT TO"

    @property
    def diagnostic_code(self) -> str | None:
        """The DSN Diagnostic-Code (RFC 3464) when a server's reply decided this."""
        reply = self.reply
        if reply is None:
            return None
        status = f" {reply.enhanced}" if reply.enhanced else ""
        return f"smtp; {reply.code}{status} {' '.join(reply.lines)}".rstrip()

    @property
    def too_many_recipients(self) -> bool:
        """A 452 to RCPT TO: the server takes no more recipients in this transaction
        (RFC 5321 4.5.3.1.10), so the recipient goes in the next one, not the next retry."""
        return self.reply is not None and self.reply.code == 452 and self.stage == "RCPT TO"


def reply_outcome(reply: Reply, stage: str, peer: str = "the server") -> Outcome:
    """The outcome a server's reply gives: 2xx delivered, 4xx temporary, 5xx permanent."""
    klass = reply.code // 100
    status = {2: DeliveryStatus.DELIVERED, 4: DeliveryStatus.TEMPORARY}.get(
        klass, DeliveryStatus.PERMANENT
    )
    if klass == 3:  # a 3xx where none belongs: a protocol error, so try again later
        status, klass = DeliveryStatus.TEMPORARY, 4
    enhanced = reply.enhanced or f"{klass}.0.0"
    said = " ".join(filter(None, (str(reply.code), reply.enhanced, *reply.lines)))
    text = f"{peer} said: {said} (in reply to {stage})"
    return Outcome(status, enhanced, text, reply, stage)


def temporary(enhanced: str, text: str, stage: str = "") -> Outcome:
    return Outcome(DeliveryStatus.TEMPORARY, enhanced, text, None, stage)


def permanent(enhanced: str, text: str, stage: str = "") -> Outcome:
    return Outcome(DeliveryStatus.PERMANENT, enhanced, text, None, stage)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Write:
    """Send these bytes to the server."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendBody:
    """Send every piece `chunks` yields, in order, waiting for each write to drain.

    The pieces are made as they are taken, so the body is never copied whole. Stop
    taking them if the client closes meanwhile (the iterator then ends by itself).
    """

    chunks: Iterator[bytes] = field(compare=False)


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The final result for one recipient of the current message."""

    address: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """Every recipient of one message is decided; the client is ready for the next one."""

    message: OutboundMessage = field(compare=False)
    results: tuple[RecipientResult, ...]


@dataclass(frozen=True, slots=True)
class HostFailed:
    """This host cannot take mail now: try the next one (always a temporary outcome)."""

    outcome: Outcome


ClientEvent = Write | SendBody | StartTls | RecipientResult | TransactionResult | HostFailed | Close

__all__ = [
    "ClientEvent",
    "Close",
    "Credentials",
    "DeliveryStatus",
    "HostFailed",
    "OutboundMessage",
    "OutboundRecipient",
    "Outcome",
    "RecipientResult",
    "SendBody",
    "StartTls",
    "TlsPolicy",
    "TransactionResult",
    "Wait",
    "Write",
    "permanent",
    "reply_outcome",
    "temporary",
]
