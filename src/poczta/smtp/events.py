"""What the SMTP server core says and hears: its events, the answers to them, and the envelope.

The core hands out events; questions (`CheckSender`, `CheckRecipient`,
`AuthPassword`, `AuthScram`, `MessageReceived`) wait for one answer from the
session before the core reads further input. `Role`, `SmtpLimits` and `TlsInfo`
are the settings and facts the session passes in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from poczta.message.header import HeaderSection
from poczta.smtp.replies import Reply
from poczta.smtp.syntax import MailParams, RcptParams


class Role(enum.Enum):
    """Which listener the connection came in on."""

    MX = "mx"  # port 25: no AUTH, mail for local or relay-permitted recipients
    SUBMISSION = "submission"  # port 587: STARTTLS, then AUTH, then MAIL
    SUBMISSIONS = "submissions"  # port 465: TLS from the first byte, AUTH, MAIL


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    """Per-session limits; each has a safe default."""

    max_command_line: int = 2048
    max_data_line: int = 65536
    max_message_size: int = 52428800
    max_recipients: int = 100
    max_errors: int = 10
    max_commands: int = 10000
    max_auth_failures: int = 3
    max_header_size: int = 262144
    max_header_fields: int = 1000


class TlsDetails(Protocol):
    """What the core keeps about a TLS layer; the network layer's own record fits it."""

    @property
    def version(self) -> str: ...
    @property
    def cipher(self) -> str: ...
    @property
    def bits(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The negotiated TLS protocol version, cipher suite and key bits."""

    version: str
    cipher: str
    bits: int = 0


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted forward-path with its RCPT parameters."""

    address: str
    params: RcptParams


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything the SMTP dialogue established about one message."""

    helo: str
    esmtp: bool
    mail_from: str
    mail_params: MailParams
    recipients: tuple[Recipient, ...]
    user: str | None
    tls: TlsDetails | None
    client_ip: str
    protocol: str


def protocol_name(*, esmtp: bool, smtputf8: bool, tls: bool, authenticated: bool) -> str:
    """The `with` keyword of a Received header (RFC 3848, RFC 6531)."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StartTls:
    """Upgrade the connection now, then call `tls_started`."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection once the pending replies are written."""


@dataclass(frozen=True, slots=True)
class CheckSender:
    """May this reverse-path be used here? Answer Accept or Reject."""

    reverse_path: str
    params: MailParams


@dataclass(frozen=True, slots=True)
class CheckRecipient:
    """Is this forward-path local or relayable for this session? Answer Accept or Reject."""

    forward_path: str
    params: RcptParams


@dataclass(frozen=True, slots=True)
class AuthPassword:
    """Check a password; answer with `answer_auth_password(user or None)`."""

    authcid: str
    password: str


@dataclass(frozen=True, slots=True)
class AuthScram:
    """Look up SCRAM keys; answer with `answer_auth_scram(creds or None, user or None)`."""

    authcid: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """For the record only (no answer): a SCRAM proof did not verify for `authcid`.

    Password mechanisms need no such event: the session saw the failed check itself.
    """

    authcid: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthSucceeded:
    """For the record only (no answer): a SCRAM proof verified; the client is now `user`.

    Password mechanisms need no such event: the session saw the successful check itself.
    """

    user: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete message: store it durably, then answer Accept or Reject. `header` is
    its header section, split once here for every reader after the core."""

    envelope: Envelope
    data: bytes
    header: HeaderSection


Event = (
    Reply
    | StartTls
    | Close
    | CheckSender
    | CheckRecipient
    | AuthPassword
    | AuthScram
    | AuthFailed
    | AuthSucceeded
    | MessageReceived
)


@dataclass(frozen=True, slots=True)
class Accept:
    """A positive answer; `text` replaces the default reply text when given."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    """A negative answer, sent to the client as given."""

    code: int
    enhanced: str
    text: str


Answer = Accept | Reject
