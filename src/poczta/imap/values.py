"""Generic IMAP data values and their wire form: strings, literals, NIL, numbers, lists.

A `Value` is None (NIL), an int (a number), a str or bytes (a string: quoted when
safe, else a literal), or a list or tuple (a parenthesised list). Marker types
say more: `Atom` is written as is (flags, keywords, item names), `Encoded` is a whole
value already in wire form (the FETCH items a message keeps), `MailboxName` is
converted for the dialect, `Octets` (message content) is always a literal, and
`Binary` (BINARY[] content) is a literal8 `~{n}` when it holds NUL. `utf8` is
True once the client enabled IMAP4rev2 or UTF8=ACCEPT: strings may then be
quoted with UTF-8 in them, and mailbox names go out in UTF-8, not modified UTF-7.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from poczta.imap.lexer import MONTHS
from poczta.imap.mutf7 import encode as mutf7_encode


class Atom(str):
    """Text written as is: an atom, flag, keyword or capability."""

    __slots__ = ()


class Encoded(str):
    """A value already in its wire form, written as its UTF-8 octets."""

    __slots__ = ()


class MailboxName(str):
    """A mailbox name: modified UTF-7 for IMAP4rev1 clients, UTF-8 otherwise."""

    __slots__ = ()


class Octets(bytes):
    """Message content (BODY[...], RFC822...): always sent as a literal."""

    __slots__ = ()


class Binary(Octets):
    """Decoded part content for BINARY[]: a literal, or literal8 when it contains NUL."""

    __slots__ = ()


Value = None | int | str | bytes | Sequence["Value"]

_UNSAFE = re.compile(rb"[\x00\r\n]")
_MONTH_NAMES = tuple(month.title() for month in MONTHS)
_MAX_QUOTED = 1024
_TEXT_BREAK = re.compile(r"[\r\n\x00]+")


# ASCII that needs neither escaping nor a literal: the common case, one regex call.
_PLAIN = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*")


def _string(data: bytes, utf8: bool, out: list[bytes]) -> None:
    if len(data) <= _MAX_QUOTED and _PLAIN.fullmatch(data) is not None:
        out += (b'"', data, b'"')
        return
    if (
        len(data) <= _MAX_QUOTED
        and _UNSAFE.search(data) is None
        and (data.isascii() or (utf8 and _valid_utf8(data)))
    ):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        out += (b'"', data, b'"')
        return
    out += (b"{%d}\r\n" % len(data), data)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def mailbox_octets(name: str, utf8: bool) -> bytes:
    """A mailbox name's octets for the dialect."""
    return name.encode("utf-8") if utf8 else mutf7_encode(name).encode("ascii")


def write_value(value: Value, out: list[bytes], utf8: bool = False) -> None:
    """Append the wire form of `value` to `out`.

    Plain str, int, None and list items are written inline, without a call each: an
    ENVELOPE or BODYSTRUCTURE is dozens of them, and FETCH writes thousands."""
    kind = type(value)
    if kind is str:
        _string(cast(str, value).encode("utf-8"), utf8, out)
        return
    if kind is Encoded:
        out.append(cast(str, value).encode("utf-8"))
        return
    if kind is list or kind is tuple:
        out.append(b"(")
        first = True
        item: Any
        for item in cast("Sequence[Value]", value):
            if first:
                first = False
            else:
                out.append(b" ")
            item_kind = type(item)
            if item_kind is str:
                _string(item.encode("utf-8"), utf8, out)
            elif item is None:
                out.append(b"NIL")
            elif item_kind is int:
                out.append(b"%d" % item)
            else:
                write_value(item, out, utf8)
        out.append(b")")
        return
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, str):
        if isinstance(value, Atom | Encoded):
            out.append(value.encode("utf-8"))
        elif isinstance(value, MailboxName):
            _string(mailbox_octets(value, utf8), utf8, out)
        else:
            _string(value.encode("utf-8"), utf8, out)
    elif isinstance(value, bytes):
        if isinstance(value, Octets):
            eight = isinstance(value, Binary) and value.find(b"\x00") >= 0
            out += (b"~{%d}\r\n" % len(value) if eight else b"{%d}\r\n" % len(value), value)
        else:
            _string(value, utf8, out)
    elif isinstance(value, int):
        out.append(b"%d" % value)
    else:
        out.append(b"(")
        for index, item in enumerate(value):
            if index:
                out.append(b" ")
            write_value(item, out, utf8)
        out.append(b")")


def encode_value(value: Value, utf8: bool = False) -> bytes:
    """The wire form of one value."""
    out: list[bytes] = []
    write_value(value, out, utf8)
    return b"".join(out)


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
