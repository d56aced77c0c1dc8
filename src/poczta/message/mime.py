"""The MIME structure of a message: its tree of parts with their fields and byte offsets,
parsed once in one forward pass.

`parse_structure` gives the root `MimePart` of a message. Every part records where its
header starts, where its body starts and ends in the message's bytes, so that any
IMAP section (BODY[1.2], BODY[1.2.MIME], BODY[3.TEXT]) is a slice of the stored
bytes; and everything IMAP BODYSTRUCTURE shows of it (see `poczta.message.imap_body`).
Each header section, of the message and of every part, is split by
`header.split_header`; the field values by `mime_params`.

Boundaries are matched the way Dovecot matches them, so that poczta shows clients
the same structure: a line starting with "--" and an active boundary is a delimiter
(the rest of the line is ignored; "--" right after the boundary closes the multipart);
when several active boundaries match, the longest wins, the innermost at equal
length. A delimiter closes every multipart nested inside its own. The line break
before a delimiter belongs to it, except on the first line after a header, a
delimiter or a close delimiter. A missing close delimiter ends the multipart where
its parent's next delimiter, or the message, ends; a multipart whose boundary never
appears has no parts (IMAP then shows one empty text/plain part).

Linear in the size of the message whatever its shape: each active boundary is searched
with `bytes.find`, only forward and only up to the next delimiter of the enclosing
ones, so no byte is scanned again per part; sizes and line counts are `bytes.count`
over each body. Nesting deeper than `MAX_DEPTH` makes a multipart or message part a
leaf; from the `MAX_PARTS`-th part on, the rest of the message is one leaf. Garbage
never raises: it gives whatever structure could be recognised, a text/plain leaf at
worst.

Where poczta differs from Dovecot 2.3 on purpose: type and subtype are lower-cased; a
Content-Type without a type/subtype is text/plain (RFC 2045), not an empty type; and
message/global is parsed as an encapsulated message (RFC 9051), as message/rfc822 is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from poczta.message.envelope import Envelope, envelope_from, first_values
from poczta.message.header import HeaderSection, split_header
from poczta.message.mime_params import (
    Params,
    param_text,
    parse_content_type,
    parse_disposition,
    parse_language,
    parse_token,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Encapsulated",
    "MimePart",
    "parse_structure",
]

MAX_DEPTH = 100
MAX_PARTS = 10_000

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_MESSAGE_SUBTYPES = ("rfc822", "global")


@dataclass(frozen=True, slots=True)
class Encapsulated:
    """The message inside a message/rfc822 part: its envelope and its root part."""

    envelope: Envelope
    root: MimePart


class MimePart(NamedTuple):
    """One part of a message (the root is the message itself). A named tuple rather than
    a frozen dataclass: the store decodes one per part for every FETCH of a structure,
    and a tuple is built several times faster.

    Offsets are into the message's bytes: the part's header is
    `[header_start, body_start)`, its body `[body_start, body_end)`. `size` counts the
    body's octets as sent (a bare LF as CRLF, like RFC822.SIZE) and `lines` its line
    ends. The field values are as written, unfolded; `encoding` is None when the part
    has no Content-Transfer-Encoding (7bit).
    """

    type: str
    subtype: str
    params: Params
    header_start: int
    body_start: int
    body_end: int
    size: int
    lines: int
    encoding: str | None = None
    id: str | None = None
    description: str | None = None
    md5: str | None = None
    disposition: tuple[str, Params] | None = None
    language: tuple[str, ...] = ()
    location: str | None = None
    parts: tuple[MimePart, ...] = ()  # the parts of a multipart
    message: Encapsulated | None = None  # the message of a message/rfc822 part

    @property
    def is_multipart(self) -> bool:
        return bool(self.parts)

    def param(self, name: str) -> str | None:
        """A Content-Type parameter's value as text (RFC 2231 decoded), any case."""
        return param_text(self.params, name)


@dataclass(frozen=True, slots=True)
class _Fields:
    """What a part's header says about it."""

    type: str = "text"
    subtype: str = "plain"
    params: Params = ()
    encoding: str | None = None
    id: str | None = None
    description: str | None = None
    md5: str | None = None
    disposition: tuple[str, Params] | None = None
    language: tuple[str, ...] = ()
    location: str | None = None


def _content_fields(header: HeaderSection) -> dict[str, str]:
    """The first value of each Content-* field, by lower-cased name."""
    first: dict[str, str] = {}
    for field in header.fields:
        name = field.name
        if name[0] | 0x20 == 0x63 and name[:8].lower() == b"content-":  # "c"
            key = field.key
            if key not in first:
                first[key] = field.text()
    return first


def _fields(first: Mapping[str, str], in_digest: bool) -> _Fields:
    """The part's description from the first value of its fields (by lower-cased name)."""
    content_type = first.get("content-type")
    parsed = parse_content_type(content_type) if content_type is not None else None
    if parsed is not None:
        kind, subtype, params = parsed
    elif in_digest and content_type is None:
        kind, subtype, params = "message", "rfc822", ()
    else:
        kind, subtype, params = "text", "plain", ()
    encoding = first.get("content-transfer-encoding")
    disposition = first.get("content-disposition")
    language = first.get("content-language")
    if encoding is None and disposition is None and language is None and len(first) < 3:
        return _Fields(kind, subtype, params, id=first.get("content-id"))  # the usual case
    return _Fields(
        kind,
        subtype,
        params,
        encoding=parse_token(encoding) if encoding is not None else None,
        id=first.get("content-id"),
        description=first.get("content-description"),
        md5=first.get("content-md5"),
        disposition=parse_disposition(disposition) if disposition is not None else None,
        language=parse_language(language) if language is not None else (),
        location=first.get("content-location"),
    )


class _Frame:
    """An open multipart: its delimiter pattern and what is known of its next delimiter."""

    __slots__ = ("below", "below_hit", "found", "length", "pattern", "searched_from", "upto")

    def __init__(self, boundary: bytes, below: _Frame | None, below_hit: _Hit) -> None:
        self.pattern = b"\n--" + boundary
        self.length = len(boundary)
        self.below = below
        self.below_hit = below_hit  # the next delimiter of the enclosing multiparts
        # The first own delimiter line at or after `searched_from` and up to `upto`
        # (line starts), or -1 when there is none there.
        self.found = -1
        self.searched_from = 0
        self.upto = -1


_Hit = tuple[int, _Frame | None]  # a delimiter's line start and its multipart; None: the end


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        self.top: _Frame | None = None
        self.count = 0
        self.stopped = False  # MAX_PARTS reached: the rest is one leaf

    # --- delimiters ------------------------------------------------------

    def next_hit(self, pos: int) -> _Hit:
        """The first delimiter line starting at or after `pos` (a line start)."""
        if self.top is None or self.stopped:
            return self.end, None
        return self._hit(self.top, pos)

    def _hit(self, frame: _Frame, pos: int) -> _Hit:
        below = frame.below_hit
        if below[0] < pos:  # this frame took the enclosing one's delimiter (a tie)
            below = self._hit(frame.below, pos) if frame.below is not None else (self.end, None)
            frame.below_hit = below
        own = self._own(frame, pos, below[0])
        if own >= 0 and (own < below[0] or below[1] is None or frame.length >= below[1].length):
            return own, frame
        return below

    def _own(self, frame: _Frame, pos: int, limit: int) -> int:
        """The first line start in [pos, limit] that starts with this frame's delimiter."""
        start = pos
        if frame.searched_from <= pos:
            if frame.found >= pos:
                return frame.found if frame.found <= limit else -1
            if frame.found < 0:
                if frame.upto >= limit:
                    return -1
                start = max(pos, frame.upto + 1)
        if start > limit:
            return -1
        pattern = frame.pattern
        at = self.data.find(pattern, max(start - 1, 0), limit - 1 + len(pattern))
        if start == pos or frame.found >= 0:
            frame.searched_from = pos
        frame.found = at + 1 if at >= 0 else -1
        frame.upto = limit
        return frame.found

    def _cut(self, line_start: int, floor: int) -> int:
        """Where content before the delimiter line at `line_start` ends: before the line
        break that belongs to the delimiter, never before `floor`."""
        if line_start >= self.end:
            return self.end
        data = self.data
        cut = line_start - 2 if data[line_start - 2 : line_start] == b"\r\n" else line_start - 1
        return max(cut, floor)

    def _line_after(self, line_start: int) -> int:
        newline = self.data.find(b"\n", line_start)
        return newline + 1 if newline >= 0 else self.end

    # --- parts -------------------------------------------------------------

    def part(
        self,
        start: int,
        depth: int,
        in_digest: bool,
        header: HeaderSection | None = None,
        first: Mapping[str, str] | None = None,
    ) -> tuple[MimePart, HeaderSection]:
        """The part starting at `start` and its header section (with `first`, the first
        value of each of its fields, when known)."""
        self.count += 1
        if self.count >= MAX_PARTS:
            self.stopped = True
        hit, _ = self.next_hit(start)
        if header is None:
            header = self._header(start, hit)
        body_start = start + header.size if header.has_body else self._cut(hit, start)
        info = _fields(first if first is not None else _content_fields(header), in_digest)
        parts: tuple[MimePart, ...] = ()
        message = None
        nested = depth < MAX_DEPTH and not self.stopped
        if nested and info.type == "multipart":
            boundary = param_text(info.params, "boundary") if header.has_body else None
            if boundary:
                parts, body_end = self._multipart(body_start, boundary, depth, info.subtype)
            else:  # no boundary, no body: a multipart of no parts
                parts, body_end = (_empty_part(body_start),), self._leaf_end(body_start)
        elif nested and info.type == "message" and info.subtype in _MESSAGE_SUBTYPES:
            root, root_header = self.part(body_start, depth + 1, False)
            message = Encapsulated(envelope_from(first_values(root_header)), root)
            body_end = root.body_end
        else:
            body_end = self._leaf_end(body_start)
        data = self.data
        lines = data.count(b"\n", body_start, body_end)
        size = body_end - body_start + lines - data.count(b"\r\n", body_start, body_end)
        part = MimePart(
            info.type,
            info.subtype,
            info.params,
            start,
            body_start,
            body_end,
            size,
            lines,
            info.encoding,
            info.id,
            info.description,
            info.md5,
            info.disposition,
            info.language,
            info.location,
            parts,
            message,
        )
        return part, header

    def _leaf_end(self, body_start: int) -> int:
        return self._cut(self.next_hit(body_start)[0], body_start)

    def _header(self, start: int, hit: int) -> HeaderSection:
        """The header section starting at `start`, which the delimiter line at `hit` ends
        if no empty line does first."""
        data = self.data
        if data[start : start + 1] == b"\n" or data[start : start + 2] == b"\r\n":
            end = start + (1 if data[start] == 0x0A else 2)
        else:
            blank = _BLANK_LINE.search(data, start, hit)
            end = blank.end() if blank is not None else self._cut(hit, start)
        return split_header(data[start:end])

    def _multipart(
        self, body_start: int, boundary: str, depth: int, subtype: str
    ) -> tuple[tuple[MimePart, ...], int]:
        frame = _Frame(
            boundary.encode("utf-8", "surrogateescape"), self.top, self.next_hit(body_start)
        )
        self.top = frame
        children: list[MimePart] = []
        floor = body_start
        hit, owner = self.next_hit(body_start)
        while owner is frame:
            next_line = self._line_after(hit)
            if self.data.startswith(b"--", hit + 2 + frame.length):  # the close delimiter
                self.top = frame.below
                floor = next_line
                hit, owner = self.next_hit(next_line)
                break
            child, _ = self.part(next_line, depth + 1, subtype == "digest")
            children.append(child)
            floor = child.body_end
            hit, owner = self.next_hit(child.body_end)
        self.top = frame.below
        if not children:
            children.append(_empty_part(body_start))
        return tuple(children), self._cut(hit, floor)


def _empty_part(at: int) -> MimePart:
    return MimePart("text", "plain", (), at, at, at, 0, 0)


def parse_structure(
    data: bytes, header: HeaderSection | None = None, first: Mapping[str, str] | None = None
) -> MimePart:
    """The root part of the message `data`, whose header is `header` when already split
    (and `first` the first unfolded value of each of its fields by lower-cased name, when
    known); never raises."""
    try:
        return _Parser(data).part(0, 0, False, header, first)[0]
    except Exception:  # last resort: the rules above should make this unreachable
        return MimePart("text", "plain", (), 0, 0, len(data), len(data), data.count(b"\n"))
