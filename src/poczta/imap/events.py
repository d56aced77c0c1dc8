"""What the command reader hands the session besides commands: errors, literals, lines.

The reader's output is a list of `Event`: a parsed `Command` value, or one of the
values below. `LiteralPending` is a question: the reader reads nothing more until
the session answers with `CommandReader.accept_literal()` or `refuse_literal()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from poczta.imap.commands import Command
from poczta.imap.encoder import Tagged, Untagged
from poczta.imap.lexer import AppendHead


@dataclass(frozen=True, slots=True)
class CommandError:
    """A command that will not run: answer `tag BAD|NO [code] reason`.

    `tag` is None when no tag could be read (the answer is then untagged). When
    `fatal` is set the reader has stopped: send the answer, then `* BYE` and
    close the connection.
    """

    tag: str | None
    reason: str
    status: str = "BAD"
    code: str | None = None
    fatal: bool = False

    def response(self) -> Tagged | Untagged:
        """The response to send."""
        if self.tag is None:
            return Untagged(self.status, self.reason, self.code)
        return Tagged(self.tag, self.status, self.reason, self.code)


@dataclass(frozen=True, slots=True)
class LiteralPending:
    """A synchronising literal of `size` octets was announced; accept or refuse it.

    Accepting means: write a continuation (`+ Ready`), then call
    `accept_literal()`. Refusing means: write a tagged NO or BAD, then call
    `refuse_literal()`; the client then abandons the command. `append` is set
    when the literal is an APPEND message (so the session can check the mailbox,
    quota and size first); `binary` for literal8.
    """

    tag: str
    size: int
    binary: bool = False
    append: AppendHead | None = None


@dataclass(frozen=True, slots=True)
class AppendStart:
    """An APPEND message of `size` octets begins; `AppendData` events carry its octets."""

    tag: str
    head: AppendHead
    size: int
    binary: bool = False


@dataclass(frozen=True, slots=True)
class AppendData:
    """The next octets of the current APPEND message; `last` on its final piece."""

    data: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """The client's answer to a SASL challenge: one raw line without CRLF (base64, or "*")."""

    line: bytes


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The client ended IDLE with DONE."""


Event = Command | CommandError | LiteralPending | AppendStart | AppendData | SaslResponse | IdleDone
