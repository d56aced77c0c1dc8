"""FETCH data items: the typed attributes and their parser (RFC 9051 section 6.4.5).

Simple items are `FetchItem(name)`; BODY[...], BODY.PEEK[...], BINARY[...] and
BINARY.PEEK[...] are `BodySection`; BINARY.SIZE[...] is `BinarySize`. The macros
ALL, FAST and FULL are expanded here. RFC822, RFC822.HEADER and RFC822.TEXT stay
items of their own because their responses keep those names (RFC822.HEADER does
not set \\Seen, RFC822 and RFC822.TEXT do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from poczta.imap.lexer import ParseError, Scanner

SIMPLE_ITEMS = frozenset(
    {
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "UID",
        "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "EMAILID", "THREADID", "SAVEDATE",
    }
)  # fmt: skip
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_ITEM_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_WORD = re.compile(rb"[A-Za-z.]+")
_ASTRING_NAME = re.compile(r'[^\x00-\x20\x7f-\uffff(){%*"\\]+')


@dataclass(frozen=True, slots=True)
class FetchItem:
    """A FETCH item without section: FLAGS, UID, ENVELOPE, RFC822.SIZE, ... (upper-case)."""

    name: str


@dataclass(frozen=True, slots=True)
class BodySection:
    """BODY[section]<partial>, BODY.PEEK[...], BINARY[...] or BINARY.PEEK[...].

    `part` holds the part numbers (`1.2` is (1, 2); () is the whole message);
    `text` is HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME or None;
    `fields` the header field names of HEADER.FIELDS[.NOT], as written;
    `partial` the (origin, length) of `<origin.length>`.
    """

    binary: bool = False
    peek: bool = False
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None

    def section_text(self) -> str:
        """The section as written between the brackets, e.g. `1.HEADER.FIELDS (FROM TO)`."""
        pieces = [".".join(map(str, self.part))] if self.part else []
        if self.text:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(map(_field_text, self.fields)) + ")"
        return spec

    def response_name(self) -> str:
        """The item name in the FETCH response: `BODY[TEXT]<0>`, `BINARY[1]` (never PEEK)."""
        name = f"{'BINARY' if self.binary else 'BODY'}[{self.section_text()}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        return name

    def request_name(self) -> str:
        """The item as a client writes it, e.g. `BODY.PEEK[HEADER]<0.100>`."""
        name = ("BINARY" if self.binary else "BODY") + (".PEEK" if self.peek else "")
        name += f"[{self.section_text()}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}.{self.partial[1]}>"
        return name


@dataclass(frozen=True, slots=True)
class BinarySize:
    """BINARY.SIZE[part]: the decoded size of a part (RFC 3516)."""

    part: tuple[int, ...] = ()


FetchAttribute = FetchItem | BodySection | BinarySize


def parse_attributes(scanner: Scanner) -> tuple[FetchAttribute, ...]:
    """A macro, one item, or a parenthesised list of items."""
    if scanner.peek() == 0x28:
        return tuple(scanner.paren_list(lambda: parse_attribute(scanner)))
    start = scanner.pos
    name = _item_name(scanner)
    if name in MACROS:
        return tuple(FetchItem(item) for item in MACROS[name])
    scanner.pos = start
    return (parse_attribute(scanner),)


def _item_name(scanner: Scanner) -> str:
    found = _ITEM_NAME.match(scanner.line, scanner.pos)
    if found is None:
        raise ParseError("expected a FETCH item")
    scanner.pos = found.end()
    return found.group().decode("ascii").upper()


def parse_attribute(scanner: Scanner) -> FetchAttribute:
    """One FETCH item."""
    name = _item_name(scanner)
    if scanner.peek() != 0x5B:  # "["
        if name in SIMPLE_ITEMS:
            return FetchItem(name)
        raise ParseError(f"unknown FETCH item {name[:32]}")
    if name in ("BODY", "BODY.PEEK"):
        section = _section(scanner)
        return BodySection(False, name == "BODY.PEEK", *section, partial=_partial(scanner))
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        scanner.pos += 1
        part = _part(scanner) if scanner.peek() != 0x5D else ()
        scanner.expect(b"]", "] after the binary section")
        if name == "BINARY.SIZE":
            return BinarySize(part)
        return BodySection(True, name == "BINARY.PEEK", part, partial=_partial(scanner))
    raise ParseError(f"{name[:32]} takes no section")


def _part(scanner: Scanner) -> tuple[int, ...]:
    numbers = [scanner.number("a part number", nonzero=True)]
    while scanner.line.startswith(b".", scanner.pos):
        following = scanner.line[scanner.pos + 1 : scanner.pos + 2]
        if not following.isdigit():
            break
        scanner.pos += 1
        numbers.append(scanner.number("a part number", nonzero=True))
        if len(numbers) > scanner.limits.max_depth:
            raise ParseError("part number nested too deeply", code="LIMIT")
    return tuple(numbers)


def _section(scanner: Scanner) -> tuple[tuple[int, ...], str | None, tuple[str, ...]]:
    scanner.pos += 1  # "["
    part: tuple[int, ...] = ()
    if 0x30 <= scanner.peek() <= 0x39:
        part = _part(scanner)
        if scanner.take(b"]"):
            return part, None, ()
        scanner.expect(b".", ". or ] after the part number")
    elif scanner.take(b"]"):
        return part, None, ()
    found = _SECTION_WORD.match(scanner.line, scanner.pos)
    text = found.group().decode("ascii").upper() if found else ""
    if found:
        scanner.pos = found.end()
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        scanner.sp()
        fields = tuple(scanner.paren_list(lambda: _field_name(scanner)))
    elif text not in ("HEADER", "TEXT", "MIME") or (text == "MIME" and not part):
        raise ParseError(f"invalid section {text[:32] or 'text'}")
    scanner.expect(b"]", "] after the section")
    return part, text, fields


def _field_name(scanner: Scanner) -> str:
    name = scanner.astring("a header field name")
    if not name or any(octet <= 0x20 or octet >= 0x7F or octet == 0x3A for octet in name):
        raise ParseError("invalid header field name")
    return name.decode("ascii")


def _field_text(name: str) -> str:
    if _ASTRING_NAME.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _partial(scanner: Scanner) -> tuple[int, int] | None:
    if not scanner.take(b"<"):
        return None
    origin = scanner.number("a partial origin", wide=True)
    scanner.expect(b".", ". in the partial range")
    length = scanner.number("a partial length", wide=True, nonzero=True)
    scanner.expect(b">", "> after the partial range")
    return origin, length
