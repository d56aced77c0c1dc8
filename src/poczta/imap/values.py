"""IMAP values that depend on the session: mailbox names, dates, flags, response text.

The generic values and their wire form (strings, literals, NIL, numbers, lists, and
the `Atom`, `Encoded`, `Octets` and `Binary` markers) are `poczta.message.imap_wire`'s;
this module adds what only the IMAP service needs. A `MailboxName` is converted for
the dialect: modified UTF-7 for IMAP4rev1 clients, UTF-8 once the client enabled
IMAP4rev2 or UTF8=ACCEPT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from poczta.imap.lexer import MONTHS
from poczta.imap.mutf7 import encode as mutf7_encode
from poczta.message.imap_wire import Atom, DialectString

__all__ = ["MailboxName", "date_time", "flag_atoms", "mailbox_octets", "response_text"]


class MailboxName(DialectString):
    """A mailbox name: modified UTF-7 for IMAP4rev1 clients, UTF-8 otherwise."""

    __slots__ = ()

    def octets(self, utf8: bool) -> bytes:
        return mailbox_octets(self, utf8)


_MONTH_NAMES = tuple(month.title() for month in MONTHS)
_TWO_DIGITS = tuple(f"{number:02d}" for number in range(100))
_ZONES: dict[int, str] = {}  # UTC offset in minutes -> "+0200" (a few distinct)
_TEXT_BREAK = re.compile(r"[\r\n\x00]+")


def mailbox_octets(name: str, utf8: bool) -> bytes:
    """A mailbox name's octets for the dialect."""
    return name.encode("utf-8") if utf8 else mutf7_encode(name).encode("ascii")


def date_time(moment: datetime) -> str:
    """IMAP date-time text (without quotes): `17-Jul-1996 02:44:25 -0700`.

    A naive datetime is taken as UTC. Written from tables of two-digit numbers and of
    the zones seen: `%02d` formatting costs twice as much, and a first FETCH of a
    large mailbox writes one per message.
    """
    offset = moment.utcoffset()
    minutes = offset.days * 1440 + offset.seconds // 60 if offset is not None else 0
    zone = _ZONES.get(minutes)
    if zone is None:
        size = abs(minutes)
        zone = _ZONES[minutes] = f"{'-' if minutes < 0 else '+'}{size // 60:02d}{size % 60:02d}"
    two = _TWO_DIGITS
    return (
        f"{two[moment.day]}-{_MONTH_NAMES[moment.month - 1]}-{moment.year:04d}"
        f" {two[moment.hour]}:{two[moment.minute]}:{two[moment.second]} {zone}"
    )


def flag_atoms(flags: Sequence[str]) -> list[Atom]:
    """Flags as a list value: `(\\Seen $Forwarded)`."""
    return [Atom(flag) for flag in flags]


def response_text(text: str, utf8: bool) -> bytes:
    """Human-readable response text on one line: CR, LF and NUL become spaces."""
    text = _TEXT_BREAK.sub(" ", text)
    if utf8:
        return text.encode("utf-8", "replace")
    return text.encode("ascii", "replace")
