"""Values exchanged with the POP3 core: limits, events it emits and answers it accepts.

Events flow out of `Pop3Server` (replies to write, questions for the session);
answers flow back in as method calls carrying the values defined here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Pop3Limits:
    """Per-connection limits of the POP3 core.

    `max_line` bounds a command line including its CRLF (RFC 2449 section 4 allows
    255 octets). `max_auth_line` bounds base64 SASL lines: the client's responses
    to "+ " challenges and an `AUTH` command carrying an initial response, which
    RFC 5034 lets exceed the command limit only in continuations but which real
    clients also send long. `max_errors` protocol errors and `max_auth_failures`
    rejected logins end the connection.
    """

    max_line: int = 255
    max_auth_line: int = 8192
    max_errors: int = 10
    max_auth_failures: int = 3

    def __post_init__(self) -> None:
        if self.max_line < 16:
            raise ValueError("max_line must be at least 16 octets")
        if self.max_auth_line < self.max_line:
            raise ValueError("max_auth_line must not be below max_line")
        if self.max_errors < 1 or self.max_auth_failures < 1:
            raise ValueError("max_errors and max_auth_failures must be positive")


# --------------------------------------------------------------------------- output events


@dataclass(frozen=True)
class Reply:
    """A single-line status response: `+OK text` or `-ERR [CODE] text`."""

    ok: bool
    text: str = ""
    code: str | None = None

    def encode(self) -> bytes:
        """The response line with its CRLF."""
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code:
            parts.append(f"[{self.code}]")
        if self.text:
            parts.append(self.text)
        return (" ".join(parts) + "\r\n").encode("utf-8")


@dataclass(frozen=True)
class MultiLine:
    """A multi-line response: `first`, then `body` (dot-stuffed, ends with ".\\r\\n")."""

    first: Reply
    body: bytes

    def encode(self) -> bytes:
        """The whole response, ready to write."""
        return self.first.encode() + self.body


@dataclass(frozen=True)
class Continue:
    """A SASL challenge line: `+ <base64 data>` (RFC 5034); the client answers one line."""

    data: bytes

    def encode(self) -> bytes:
        """The continuation line with its CRLF (`+ ` alone for empty data)."""
        return b"+ " + base64.b64encode(self.data) + b"\r\n"


@dataclass(frozen=True)
class StartTls:
    """Upgrade the connection to TLS now, then call `Pop3Server.tls_started()`.

    The "+OK" preceding it must be written first; input received until
    `tls_started()` is discarded by the core (RFC 2595 section 4).
    """


@dataclass(frozen=True)
class Close:
    """Close the connection after writing everything before it."""


@dataclass(frozen=True)
class CheckPassword:
    """Verify `password` for `user`; answer with `Pop3Server.login_result()`."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class NeedScram:
    """Look up SCRAM-SHA-256 keys for `authcid`; answer with `Pop3Server.scram_result()`."""

    authcid: str


@dataclass(frozen=True)
class OpenMailbox:
    """Lock and snapshot `user`'s INBOX; answer with `Pop3Server.mailbox_opened()`."""

    user: str


@dataclass(frozen=True)
class NeedMessage:
    """Read message `number` (UIDL string `uid`); answer with `Pop3Server.message_data()`."""

    number: int
    uid: str


@dataclass(frozen=True)
class NeedTop:
    """Read message `number` for TOP; answer with `Pop3Server.message_data()`.

    The session may hand back the whole message or only the header, blank line
    and first `lines` body lines: the core trims to exactly that either way.
    """

    number: int
    uid: str
    lines: int


@dataclass(frozen=True)
class CommitDeletions:
    """Expunge `uids` atomically (UPDATE state); answer with `Pop3Server.update_done()`."""

    uids: tuple[str, ...]


Event = (
    Reply
    | MultiLine
    | Continue
    | StartTls
    | Close
    | CheckPassword
    | NeedScram
    | OpenMailbox
    | NeedMessage
    | NeedTop
    | CommitDeletions
)


# --------------------------------------------------------------------------- answers


LOGIN_UNAVAILABLE = "Authentication is not available now, try again later"


@dataclass(frozen=True)
class LoginResult:
    """The session's verdict on a password: the canonical user, or a refusal.

    A refusal carries the response code to send: "AUTH" for bad credentials (the
    default, counted towards the failure limit), "LOGIN-DELAY" or "SYS/TEMP".
    """

    user: str | None
    code: str = "AUTH"
    text: str = "Authentication failed"

    @property
    def ok(self) -> bool:
        """True when the login succeeded."""
        return self.user is not None

    @classmethod
    def success(cls, user: str) -> LoginResult:
        """Logged in as `user`."""
        return cls(user)

    @classmethod
    def failure(cls, code: str = "AUTH", text: str = "Authentication failed") -> LoginResult:
        """Refused with response `code` and `text`."""
        return cls(None, code, text)

    @classmethod
    def unavailable(cls) -> LoginResult:
        """Not checked: the accounts could not be read (the store is down)."""
        return cls(None, "SYS/TEMP", LOGIN_UNAVAILABLE)


def valid_uid(uid: str) -> bool:
    """RFC 1939 unique-id: 1 to 70 characters in 0x21..0x7E."""
    return 0 < len(uid) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in uid)


@dataclass(frozen=True)
class MaildropSnapshot:
    """The maildrop as fixed at login: message `n` is `messages[n - 1]` = (uid, size).

    Sizes are octets as sent (CRLF line ends, before dot-stuffing). UIDs are
    opaque, unique, and must satisfy RFC 1939's unique-id syntax.
    """

    messages: tuple[tuple[str, int], ...]

    def __init__(self, messages: Sequence[tuple[str, int]]) -> None:
        items = tuple((str(uid), int(size)) for uid, size in messages)
        seen: set[str] = set()
        for uid, size in items:
            if not valid_uid(uid):
                raise ValueError(f"invalid POP3 unique-id: {uid!r}")
            if uid in seen:
                raise ValueError(f"duplicate POP3 unique-id: {uid!r}")
            if size < 0:
                raise ValueError("message size must not be negative")
            seen.add(uid)
        object.__setattr__(self, "messages", items)


@dataclass(frozen=True)
class MailboxError:
    """The maildrop could not be opened: `code` is "IN-USE", "SYS/TEMP" or "SYS/PERM"."""

    code: str
    text: str
