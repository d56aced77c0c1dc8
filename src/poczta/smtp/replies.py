"""SMTP replies: the `Reply` value (code, enhanced status, text lines) and its wire form.

Enhanced status codes (RFC 2034, RFC 3463) go on every 2xx/4xx/5xx reply except
the greeting and the HELO/EHLO answer; those pass `enhanced=None`. A multi-line
reply repeats the enhanced code on each line, as RFC 2034 asks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; `extra` holds further lines of a multi-line reply."""

    code: int
    enhanced: str | None
    text: str
    extra: tuple[str, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        """The text of every line, first to last, without code or enhanced status."""
        return (self.text, *self.extra)

    def render(self) -> list[str]:
        """The reply lines as they go on the wire, without CRLF."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        lines = self.lines
        last = len(lines) - 1
        out: list[str] = []
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}")
        return out

    def encode(self) -> bytes:
        """The reply in wire form, CRLF-terminated, UTF-8 encoded."""
        return ("\r\n".join(self.render()) + "\r\n").encode("utf-8")

    @property
    def is_positive(self) -> bool:
        """True for 2xx and 3xx replies."""
        return self.code < 400


# Replies used in more than one place; the rest are built where they are decided.
OK = Reply(250, "2.0.0", "OK")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NO_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_UTF8 = Reply(500, "5.5.2", "Invalid UTF-8 in command")
NO_ARGUMENTS = Reply(501, "5.5.4", "Syntax error: no arguments allowed")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands, closing connection")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
DATA_LINE_TOO_LONG = Reply(552, "5.5.2", "Message line too long")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header size exceeds limit")
TOO_MANY_HEADER_FIELDS = Reply(554, "5.6.0", "Message header has too many fields")
BARE_LINE_ENDING = Reply(550, "5.6.0", "Bare CR or LF in message; use CRLF line endings")
NEED_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
