"""The header section of a message, split once into fields with their bytes and offsets.

This is the one place where poczta splits a header section. The SMTP core splits each
message it receives (and refuses one whose header is over the limits), and every
reader after it takes the `HeaderSection` instead of splitting again: DKIM and DMARC,
the removal of forged fields, the submission sender rules, the parsed-message facts.

The split is a single linear pass: one regular expression finds each field with its
continuation lines (no line is looked at twice), and a folded field's line ends are
made CRLF once, so a header of many thousands of continuation lines costs no more than
one of long lines.

- A field starts with a name of printable ASCII other than ":" (WSP before the colon
  allowed, as RFC 5322's obsolete syntax does) and runs until a line that does not start
  with a space or tab.
- Lines that are neither a field nor the continuation of one (an mbox ``From `` line,
  junk) are skipped, as are continuation lines that follow them; their bytes stay in
  the message.
- The header ends at the first empty line; a message without one is all header.
  Line ends may be CRLF or a bare LF; values are given with CRLF line ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

__all__ = ["HeaderField", "HeaderLimitExceeded", "HeaderSection", "field_key", "split_header"]

# A field: a line that starts with a name and a colon, and the lines after it that start
# with a space or a tab; lines of neither kind (and those after them) match nothing.
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+[ \t]*):([^\n]*(?:\n[ \t][^\n]*)*)(?:\n|\Z)", re.M)


class HeaderLimitExceeded(ValueError):
    """The header section is larger, or has more fields, than allowed."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"header {what} exceeds {limit}")
        self.what = what  # "size" or "fields"
        self.limit = limit


class HeaderField(NamedTuple):
    """One header field: its name as written, its raw value and where it stands.

    A named tuple rather than a frozen dataclass: a message's every field is one, and a
    tuple is built several times faster (as `poczta.message.mime.MimePart`)."""

    name: bytes  # as written before the colon, WSP included
    value: bytes  # after the colon to the end of the field, folding kept, lines end in CRLF
    start: int  # offset of the field's first byte in the message
    end: int  # offset just past the line end of its last line
    key: str  # the name for comparisons: lowercased, without trailing WSP (see `field_key`)

    def text(self) -> str:
        """The value unfolded (line breaks removed) and stripped, as text."""
        return self.value.replace(b"\r\n", b"").decode("utf-8", "replace").strip()

    def shifted(self, delta: int) -> HeaderField:
        return HeaderField(self.name, self.value, self.start + delta, self.end + delta, self.key)


@dataclass(frozen=True, slots=True)
class HeaderSection:
    """The fields of a message's header and where its body starts."""

    fields: tuple[HeaderField, ...]
    size: int  # octets of the header section with its empty line: the body's offset
    has_body: bool  # False when the message has no empty line after its header

    def __iter__(self) -> Iterator[HeaderField]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def named(self, key: str) -> list[HeaderField]:
        """Every field called `key` (lowercase), in order."""
        return [f for f in self.fields if f.key == key]

    def first(self, key: str) -> HeaderField | None:
        return next((f for f in self.fields if f.key == key), None)

    def body(self, data: bytes) -> bytes:
        """The body of `data`, the message this section was split from."""
        return data[self.size :] if self.has_body else b""

    def without(
        self, data: bytes, drop: Callable[[HeaderField], bool]
    ) -> tuple[bytes, HeaderSection]:
        """`data` without the fields `drop` chooses, and the section of the result; every
        other byte stays as it was."""
        if not any(drop(f) for f in self.fields):
            return data, self
        pieces: list[bytes] = []
        kept: list[HeaderField] = []
        position = removed = 0
        for field in self.fields:
            if drop(field):
                pieces.append(data[position : field.start])
                position = field.end
                removed += field.end - field.start
            else:
                kept.append(field.shifted(-removed) if removed else field)
        pieces.append(data[position:])
        return b"".join(pieces), HeaderSection(tuple(kept), self.size - removed, self.has_body)

    def prepended(self, data: bytes, fields: bytes) -> tuple[bytes, HeaderSection]:
        """`fields` (complete header lines ending in CRLF, made by us) put before `data`,
        and the section of the result."""
        if not fields:
            return data, self
        ours = _split_fields(fields, len(fields))
        moved = tuple(f.shifted(len(fields)) for f in self.fields)
        return fields + data, HeaderSection((*ours, *moved), self.size + len(fields), True)


def split_header(
    data: bytes,
    *,
    max_size: int | None = None,
    max_fields: int | None = None,
    only: tuple[str, ...] = (),
) -> HeaderSection:
    """The header section of `data`; HeaderLimitExceeded past `max_size` octets (the
    empty line not counted) or `max_fields` fields. Never raises otherwise.

    With `only` (lowercase field names), the section holds just the fields of those
    names, exactly those a whole split would have, found without splitting the others:
    a field of another name cannot look like one of them, since a field's first line is
    the only line that starts without a space or tab."""
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        return HeaderSection((), 1 if data[:1] == b"\n" else 2, True)
    limit = len(data) if max_size is None else min(len(data), max_size + 4)
    end = _header_end(data, limit)
    if end is None:
        if max_size is not None and len(data) > max_size:
            raise HeaderLimitExceeded("size", max_size)
        return HeaderSection(_split_fields(data, len(data), max_fields, only), len(data), False)
    start, after = end
    if max_size is not None and start > max_size:
        raise HeaderLimitExceeded("size", max_size)
    # The empty line's match begins with the last field's line end: keep it with the field.
    last_line_end = start + (2 if data[start] == 0x0D else 1)
    return HeaderSection(_split_fields(data, last_line_end, max_fields, only), after, True)


def _header_end(data: bytes, limit: int) -> tuple[int, int] | None:
    """Where the first `\\r?\\n\\r?\\n` in `data[:limit]` starts and ends. One search
    for a line feed followed by an empty line: it goes from line feed to line feed and
    stops at the first empty line, where a find of each kind of empty line runs through
    the whole body for the kind the message does not use."""
    found = _EMPTY_LINE.search(data, 0, limit)
    if found is None:
        return None
    newline, after = found.span()
    return (newline - 1 if newline and data[newline - 1] == 0x0D else newline), after


_EMPTY_LINE = re.compile(rb"\n\r?\n")


@lru_cache(maxsize=64)
def _named_fields(keys: tuple[str, ...]) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """`_FIELD` for the fields called one of `keys` only: one pattern for the first line,
    one for every other line start, found by its line feed (a pattern that starts with a
    literal is searched for many times faster than one that starts with ``^``). The
    second leaves the field's line feed to the field after it."""
    names = b"|".join(re.escape(key.encode("ascii")) for key in keys)
    field = rb"((?i:" + names + rb")[ \t]*):([^\n]*(?:\n[ \t][^\n]*)*)"
    return re.compile(field + rb"(?:\n|\Z)"), re.compile(rb"\n" + field + rb"(?=\n|\Z)")


def _field_spans(
    data: bytes, stop: int, only: tuple[str, ...]
) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(start, end, name, value) of each field in `data[:stop]` (those named `only`)."""
    if not only:
        for match in _FIELD.finditer(data, 0, stop):
            yield match.start(), match.end(), match[1], match[2]
        return
    first_line, line_start = _named_fields(only)
    first = first_line.match(data, 0, stop)
    if first is not None:
        yield first.start(), first.end(), first[1], first[2]
    for match in line_start.finditer(data, 0, stop):
        end = match.end() + 1 if match.end() < stop else match.end()
        yield match.start() + 1, end, match[1], match[2]


def _split_fields(
    data: bytes, stop: int, max_fields: int | None = None, only: tuple[str, ...] = ()
) -> tuple[HeaderField, ...]:
    """The fields of `data[:stop]`, a run of header lines (those named `only`, if given)."""
    fields: list[HeaderField] = []
    for start, end, name, value in _field_spans(data, stop, only):
        if max_fields is not None and len(fields) >= max_fields:
            raise HeaderLimitExceeded("fields", max_fields)
        if value.endswith(b"\r"):  # the last line's CR; the line end itself is not taken
            value = value[:-1]
        if b"\n" in value:  # folded: every line ends in CRLF, whatever it ended in
            value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        fields.append(HeaderField(name, value + b"\r\n", start, end, field_key(name)))
    return tuple(fields)


def field_key(name: bytes) -> str:
    """A field name as compared: lowercased, without trailing WSP (the split keeps only
    names of printable ASCII, so decoding cannot fail)."""
    return name.rstrip(b" \t").decode("ascii").lower()
