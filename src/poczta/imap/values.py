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
_TEXT_BREAK = re.compile(r"[\r\n\x00]+")


def mailbox_octets(name: str, utf8: bool) -> bytes:
    """A mailbox name's octets for the dialect."""
    return name.encode("utf-8") if utf8 else mutf7_encode(name).encode("ascii")


def date_time(moment: datetime) -> str:
    """IMAP date-time text (without quotes): `17-Jul-1996 02:44:25 -0700`.

    A naive datetime is taken as UTC.
    """
    offset = moment.utcoffset()
    minutes = offset.days * 1440 + offset.seconds // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return "%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (  # noqa: UP031 - twice as fast as f""
        moment.day,
        _MONTH_NAMES[moment.month - 1],
        moment.year,
        moment.hour,
        moment.minute,
        moment.second,
        sign,
        minutes // 60,
        minutes % 60,
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
