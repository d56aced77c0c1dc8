"""IMAP data values and their wire form: strings, literals, NIL, numbers, lists.

A `Value` is None (NIL), an int (a number), a str or bytes (a string: quoted when
safe, else a literal), or a list or tuple (a parenthesised list). Marker types
say more: `Atom` is written as is (flags, keywords, item names), `Encoded` is a whole
value already in wire form (the FETCH items a message keeps), a `DialectString` is
converted for the dialect by its own `octets` (IMAP's mailbox names), `Octets`
(message content) is always a literal, and `Binary` (BINARY[] content) is a literal8
`~{n}` when it holds NUL. `utf8` is True once the client enabled IMAP4rev2 or
UTF8=ACCEPT: strings may then be quoted with UTF-8 in them.

The grammar lives here, beside the message facts it writes (`imap_body` builds the
ENVELOPE and BODYSTRUCTURE values, `fetch_text` keeps their wire text), so that the
store can keep that text without importing the IMAP service, which uses it for every
response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

__all__ = [
    "Atom",
    "Binary",
    "DialectString",
    "Encoded",
    "Octets",
    "Value",
    "encode_value",
    "write_value",
]


class Atom(str):
    """Text written as is: an atom, flag, keyword or capability."""

    __slots__ = ()


class Encoded(str):
    """A value already in its wire form, written as its UTF-8 octets."""

    __slots__ = ()


class DialectString(str):
    """A string whose octets depend on the dialect; subclasses say how in `octets`."""

    __slots__ = ()

    def octets(self, utf8: bool) -> bytes:
        """The octets of this string for the dialect (UTF-8 unless a subclass says)."""
        return self.encode("utf-8")


class Octets(bytes):
    """Message content (BODY[...], RFC822...): always sent as a literal."""

    __slots__ = ()


class Binary(Octets):
    """Decoded part content for BINARY[]: a literal, or literal8 when it contains NUL."""

    __slots__ = ()


Value = None | int | str | bytes | Sequence["Value"]

_UNSAFE = re.compile(rb"[\x00\r\n]")
_MAX_QUOTED = 1024


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
        elif isinstance(value, DialectString):
            _string(value.octets(utf8), utf8, out)
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
