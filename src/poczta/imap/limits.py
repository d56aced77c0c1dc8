"""The IMAP core's named limits and the dialect options a session sets after ENABLE.

Every bound the command reader and parser enforce lives here with a safe default,
so a hostile client costs bounded memory and CPU: line length, literal sizes (one
limit for APPEND messages, one for every other literal), the whole command's size,
the number of literals, list nesting depth, list items, search keys, and the text
of one sequence set.
"""

from __future__ import annotations

from dataclasses import dataclass

LITERAL_MINUS_MAX = 4096


@dataclass(frozen=True, slots=True)
class ImapLimits:
    """Per-connection bounds of the command reader and parser.

    `max_line` bounds one line of a command (between literals) without its CRLF;
    `max_command` bounds the lines plus the non-message literals of one command.
    `max_literal` bounds one literal other than an APPEND message;
    `max_append_literal` bounds one APPEND message (the advertised APPENDLIMIT).
    `max_discard` is how many octets of a refused non-synchronising literal are
    read and thrown away before the connection is given up instead.
    `max_pipelined` bounds input buffered while the reader waits for the session.
    """

    max_line: int = 65536
    max_command: int = 1 << 20
    max_literal: int = 65536
    max_append_literal: int = 50 << 20
    max_literals: int = 1000
    max_discard: int = 1 << 20
    max_depth: int = 64
    max_items: int = 10000
    max_search_keys: int = 1000
    max_sequence_set: int = 65536
    max_pipelined: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_line < 256:
            raise ValueError("max_line must be at least 256 octets")
        if self.max_command < self.max_line:
            raise ValueError("max_command must not be below max_line")
        if min(self.max_depth, self.max_items, self.max_search_keys, self.max_literals) < 1:
            raise ValueError("depth, item, search key and literal counts must be positive")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How the client speaks, as the session has negotiated it.

    `utf8` is set once the client has enabled IMAP4rev2 or UTF8=ACCEPT: quoted
    strings may carry UTF-8 and mailbox names are UTF-8; otherwise mailbox names
    are modified UTF-7 (RFC 3501 section 5.1.3). `literal_minus` is set when the
    server advertises LITERAL- rather than LITERAL+ (RFC 7888): non-synchronising
    literals are then allowed only up to 4096 octets.
    """

    utf8: bool = False
    literal_minus: bool = False
