"""Tokens of an IMAP command: the scanner the command parsers read with.

A command arrives from the reader as its lines (without CRLF) and the literals
between them: every line but the last ends with a literal announcement
(`{n}`, `{n+}` or `~{n}`) whose octets are the matching entry of `literals`.
`Scanner` walks that structure token by token, with one compiled pattern per
token (never per octet) and no copying of the line.

Errors are `ParseError` exceptions carrying the precise reason; they never
leave the package: the reader turns them into BAD (or NO) events. A scanner over
an unfinished command (the last literal not read yet) raises `Incomplete` when it
reaches that literal, telling the reader whether it is an APPEND message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.mutf7 import Mutf7Error
from poczta.imap.mutf7 import decode as mutf7_decode
from poczta.imap.sequence import SequenceSet, SequenceSyntaxError, parse_sequence_set

T = TypeVar("T")

_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_DIGITS = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9:*,$]+")
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{4})"'
)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NUMBER = {name: index + 1 for index, name in enumerate(MONTHS)}
SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
MAX_NUMBER64 = (1 << 63) - 1


class ParseError(Exception):
    """A command is malformed (BAD) or refused by the parser (NO with a code)."""

    def __init__(self, reason: str, *, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status
        self.tag: str | None = None


@dataclass(frozen=True, slots=True)
class MessageSlot:
    """Where an APPEND message literal stood; its octets went to the session as they came."""

    size: int
    binary: bool


@dataclass(frozen=True, slots=True)
class AppendHead:
    """What an APPEND command says about a message before its literal is read."""

    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime | None
    index: int


class Incomplete(Exception):
    """The scanner reached the literal not yet read; `head` is set for an APPEND message."""

    def __init__(self, head: AppendHead | None) -> None:
        super().__init__("literal not read yet")
        self.head = head


Literal = bytes | MessageSlot


@dataclass(slots=True)
class Scanner:
    """A cursor over one command's lines and literals (see the module docstring)."""

    lines: Sequence[bytes]
    literals: Sequence[Literal]
    dialect: Dialect
    limits: ImapLimits
    index: int = 0
    pos: int = 0
    depth: int = 0
    search_keys: int = 0
    line: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.line = self.lines[0]

    # ------------------------------------------------------------------ position

    def peek(self) -> int:
        """The next octet, or -1 at the end of the current line."""
        return self.line[self.pos] if self.pos < len(self.line) else -1

    def at_end(self) -> bool:
        """True at the end of the whole command."""
        return self.pos >= len(self.line) and self.index == len(self.lines) - 1

    def end(self) -> None:
        """Require the end of the command."""
        if not self.at_end():
            raise ParseError("unexpected text at the end of the command")

    def sp(self) -> None:
        """Require one space."""
        if self.peek() != 0x20:
            what = "end of command" if self.at_end() else "unexpected character"
            raise ParseError(f"expected a space, found {what}")
        self.pos += 1

    def skip_sp(self) -> bool:
        """Consume one space if there is one."""
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def take(self, char: bytes) -> bool:
        """Consume `char` (one octet) if it comes next."""
        if self.line.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def expect(self, char: bytes, what: str) -> None:
        """Require `char` (one octet), naming `what` in the error."""
        if not self.take(char):
            raise ParseError(f"expected {what}")

    def _match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        found = pattern.match(self.line, self.pos)
        if found is None:
            raise ParseError(f"expected {what}")
        self.pos = found.end()
        return found.group()

    # ------------------------------------------------------------------ tokens

    def tag(self) -> str:
        """A command tag."""
        return self._match(_TAG, "a tag").decode("ascii")

    def atom(self, what: str = "an atom") -> str:
        """An atom, as written."""
        return self._match(_ATOM, what).decode("ascii")

    def keyword(self, what: str = "a keyword") -> str:
        """An atom upper-cased: command names, options, search keys."""
        return self._match(_ATOM, what).decode("ascii").upper()

    def number(self, what: str = "a number", *, wide: bool = False, nonzero: bool = False) -> int:
        """A number: 32-bit unsigned, or number64 when `wide`; nz-number when `nonzero`."""
        digits = self._match(_DIGITS, what)
        if len(digits) > 19:
            raise ParseError(f"{what} is too large")
        value = int(digits)
        if value > (MAX_NUMBER64 if wide else 0xFFFFFFFF):
            raise ParseError(f"{what} is too large")
        if nonzero and value == 0:
            raise ParseError(f"{what} must not be zero")
        return value

    def quoted(self) -> bytes:
        """A quoted string's content, unescaped."""
        found = _QUOTED.match(self.line, self.pos)
        if found is None:
            raise ParseError("invalid quoted string")
        self.pos = found.end()
        value = found.group(1)
        if not value.isascii() and not self.dialect.utf8:
            raise ParseError("8-bit octet in a quoted string")
        if b"\\" in value:
            value = value.replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        return value

    def literal(self) -> bytes:
        """A literal's octets; the scanner moves on to the line after it."""
        value = self._literal_slot(None)
        if isinstance(value, MessageSlot):
            raise ParseError("message literal in the wrong place")
        return value

    def message(self, head: AppendHead) -> MessageSlot:
        """An APPEND message literal (`{n}` or literal8 `~{n}`)."""
        value = self._literal_slot(head)
        if not isinstance(value, MessageSlot):
            raise ParseError("expected a message literal")
        return value

    def _literal_slot(self, head: AppendHead | None) -> Literal:
        found = _LITERAL.match(self.line, self.pos)
        if found is None or found.end() != len(self.line):
            raise ParseError("invalid literal announcement")
        if found.group(1) and head is None:
            raise ParseError("literal8 is only allowed for APPEND message data")
        if self.index >= len(self.literals):
            raise Incomplete(head)
        value = self.literals[self.index]
        self.index += 1
        self.line = self.lines[self.index]
        self.pos = 0
        return value

    def string_next(self) -> bool:
        """True when a quoted string or a literal (`{`, `~{`) comes next."""
        char = self.peek()
        return (
            char == 0x22
            or char == 0x7B
            or (char == 0x7E and self.line.startswith(b"{", self.pos + 1))
        )

    def string(self) -> bytes:
        """A quoted string or a literal."""
        char = self.peek()
        if char == 0x22:
            return self.quoted()
        if self.string_next():
            return self.literal()
        raise ParseError("expected a string")

    def astring(self, what: str = "an astring") -> bytes:
        """An atom (with "]" allowed) or a string."""
        if self.string_next():
            return self.string()
        return self._match(_ASTRING, what)

    def nil(self) -> bool:
        """Consume NIL (any case) if it comes next."""
        if self.line[self.pos : self.pos + 3].upper() == b"NIL":
            self.pos += 3
            return True
        return False

    def nstring(self) -> bytes | None:
        """A string or NIL."""
        return None if self.nil() else self.string()

    def text(self, raw: bytes, what: str = "string") -> str:
        """`raw` as Unicode: UTF-8, strictly."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not valid UTF-8") from None

    def astring_text(self, what: str = "an astring") -> str:
        """An astring decoded as UTF-8."""
        return self.text(self.astring(what), what)

    # ------------------------------------------------------------------ compound values

    def paren_list(self, item: Callable[[], T], *, empty: bool = False) -> list[T]:
        """`(item SP item ...)`; `empty` allows `()`."""
        self.expect(b"(", "(")
        items: list[T] = []
        if self.take(b")"):
            if not empty:
                raise ParseError("empty list")
            return items
        while True:
            items.append(item())
            if len(items) > self.limits.max_items:
                raise ParseError("too many items in a list", code="LIMIT")
            if self.take(b")"):
                return items
            self.sp()

    def enter(self) -> None:
        """One level deeper in nested groups; bounded by the depth limit."""
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise ParseError("lists nested too deeply", code="LIMIT")

    def leave(self) -> None:
        """Back out of one nested level."""
        self.depth -= 1

    def sequence_set(self, *, allow_saved: bool = True) -> SequenceSet:
        """A sequence set or UID set (`$` allowed unless told otherwise)."""
        start = self.pos
        text = self._match(_SEQUENCE, "a sequence set")
        if len(text) > self.limits.max_sequence_set:
            self.pos = start
            raise ParseError("sequence set too long", code="LIMIT")
        try:
            return parse_sequence_set(text.decode("ascii"), allow_saved=allow_saved)
        except SequenceSyntaxError as error:
            raise ParseError(str(error)) from None

    def mailbox(self) -> str:
        """A mailbox name, decoded for the dialect; INBOX in any case is "INBOX"."""
        name = self.mailbox_text(self.astring("a mailbox name"))
        return "INBOX" if name.upper() == "INBOX" else name

    def mailbox_text(self, raw: bytes) -> str:
        """Mailbox-name octets as Unicode: UTF-8, or modified UTF-7 for IMAP4rev1."""
        if self.dialect.utf8:
            return self.text(raw, "mailbox name")
        decoded = mutf7_decode(raw)
        if isinstance(decoded, Mutf7Error):
            if raw.isascii():  # a stray "&": the name as written, as Dovecot takes it
                return raw.decode("ascii")
            raise ParseError(f"mailbox name is not modified UTF-7: {decoded.reason}")
        return decoded

    def list_mailbox(self) -> str:
        """A LIST pattern: list-chars (with % and *) or a string, decoded like a mailbox."""
        raw = self.string() if self.string_next() else self._match(_LIST_CHARS, "a mailbox pattern")
        return self.mailbox_text(raw)

    def flag(self, *, allow_recent: bool = False) -> str:
        """A flag: a system flag (case normalised), `\\Extension` or a keyword."""
        if self.take(b"\\"):
            name = "\\" + self.atom("a flag name")
            flag = SYSTEM_FLAGS.get(name.upper(), name)
            if flag == "\\Recent" and not allow_recent:
                raise ParseError("\\Recent cannot be set by a client")
            return flag
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        """`(flag ...)`, possibly empty."""
        return tuple(self.paren_list(self.flag, empty=True))

    def date(self) -> date:
        """A search date: `1-Feb-1994`, optionally quoted."""
        quoted = self.take(b'"')
        found = _DATE.match(self.line, self.pos)
        if found is None:
            raise ParseError("expected a date like 1-Feb-1994")
        self.pos = found.end()
        if quoted:
            self.expect(b'"', "closing quote of the date")
        day, month, year = found.groups()
        try:
            return date(int(year), _month(month), int(day))
        except ValueError:
            raise ParseError("no such date") from None

    def date_time(self) -> datetime:
        """An APPEND date-time: `"17-Jul-1996 02:44:25 -0700"`."""
        found = _DATE_TIME.match(self.line, self.pos)
        if found is None:
            raise ParseError('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        self.pos = found.end()
        day, month, year, hour, minute, second, sign, zone = found.groups()
        try:
            offset = timedelta(hours=int(zone[:2]), minutes=int(zone[2:]))
            return datetime(
                int(year),
                _month(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone(-offset if sign == b"-" else offset),
            )
        except ValueError:
            raise ParseError("no such date-time") from None


def _month(name: bytes) -> int:
    number = _MONTH_NUMBER.get(name.decode("ascii").upper())
    if number is None:
        raise ParseError("unknown month name")
    return number


def literal_announcement(line: bytes) -> tuple[int, bool, bool] | None:
    """(size, synchronising, literal8) when `line` ends with a literal, else None."""
    if not line.endswith(b"}"):
        return None
    brace = line.rfind(b"{")
    if brace < 0:
        return None
    start = brace - 1 if brace > 0 and line[brace - 1] == 0x7E else brace
    found = _LITERAL.match(line, start)
    if found is None or found.end() != len(line):
        return None
    return int(found.group(2)), not found.group(3), bool(found.group(1))


def leading_tag(line: bytes) -> str | None:
    """The tag of a (possibly truncated) command line, when one can be read."""
    found = _TAG.match(line)
    if found is None or found.end() >= len(line) or line[found.end()] != 0x20:
        return None
    return found.group().decode("ascii")
