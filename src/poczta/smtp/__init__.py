"""SMTP for poczta: the sans-I/O server core, its events, replies and argument syntax.

The asyncio session layer lives in `poczta.smtp.session`; everything exported
here is pure and never performs I/O.
"""

from poczta.smtp.body import BareLineEndings
from poczta.smtp.client import SmtpClient, SmtpClientError
from poczta.smtp.client_events import (
    ClientEvent,
    Credentials,
    DeliveryStatus,
    HostFailed,
    OutboundMessage,
    OutboundRecipient,
    Outcome,
    RecipientResult,
    SendBody,
    TlsPolicy,
    TransactionResult,
    Wait,
    Write,
)
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
    "ClientEvent",
    "Close",
    "Credentials",
    "DeliveryStatus",
    "Envelope",
    "Event",
    "HostFailed",
    "MailParams",
    "MessageReceived",
    "OutboundMessage",
    "OutboundRecipient",
    "Outcome",
    "RcptParams",
    "Recipient",
    "RecipientResult",
    "Reject",
    "Reply",
    "Role",
    "SendBody",
    "SmtpClient",
    "SmtpClientError",
    "SmtpLimits",
    "SmtpServer",
    "SmtpStateError",
    "StartTls",
    "TlsDetails",
    "TlsInfo",
    "TlsPolicy",
    "TransactionResult",
    "Wait",
    "Write",
    "protocol_name",
]
