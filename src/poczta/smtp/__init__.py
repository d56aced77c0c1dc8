"""SMTP for poczta: the sans-I/O server core, its events, replies and argument syntax.

The asyncio session layer lives in `poczta.smtp.session`; everything exported
here is pure and never performs I/O.
"""

from poczta.smtp.body import BareLineEndings
from poczta.smtp.events import (
    Accept,
    Answer,
    AuthFailed,
    AuthPassword,
    AuthScram,
    AuthSucceeded,
    CheckRecipient,
    CheckSender,
    Close,
    Envelope,
    Event,
    MessageReceived,
    Recipient,
    Reject,
    Role,
    SmtpLimits,
    StartTls,
    TlsDetails,
    TlsInfo,
    protocol_name,
)
from poczta.smtp.replies import Reply
from poczta.smtp.server import SmtpServer, SmtpStateError
from poczta.smtp.syntax import MailParams, RcptParams

__all__ = [
    "Accept",
    "Answer",
    "AuthFailed",
    "AuthPassword",
    "AuthScram",
    "AuthSucceeded",
    "BareLineEndings",
    "CheckRecipient",
    "CheckSender",
    "Close",
    "Envelope",
    "Event",
    "MailParams",
    "MessageReceived",
    "RcptParams",
    "Recipient",
    "Reject",
    "Reply",
    "Role",
    "SmtpLimits",
    "SmtpServer",
    "SmtpStateError",
    "StartTls",
    "TlsDetails",
    "TlsInfo",
    "protocol_name",
]
