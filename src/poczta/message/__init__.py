"""Parsed-message facts: header fields, envelope, date, size, search text and MIME
structure of a message.

The sub-modules own the pieces: `header` splits the header section (the one place that
does), `words` decodes RFC 2047 encoded-words, `addresses` splits address lists,
`envelope` builds the IMAP ENVELOPE, `mime` parses the tree of MIME parts (with
`mime_params` for field values) and `imap_body` turns it into what IMAP FETCH shows;
`imap_wire` writes such values in IMAP's wire form and `fetch_text` makes the ENVELOPE
and BODYSTRUCTURE text the store keeps with a message.

`parse_message` turns the raw bytes of a message into a `ParsedMessage` once, at
delivery, so that the store can keep the facts IMAP FETCH and SEARCH need and never
parse the message again. It is pure (no I/O) and never raises: garbage in gives a
`ParsedMessage` with whatever could be recognised.

- The header section is split by `header.split_header`, or handed in already split.
- Header values are kept raw (unfolded, not decoded), as IMAP ENVELOPE wants them,
  and decoded (RFC 2047 encoded-words, whitespace collapsed) for SEARCH.
- `size` counts octets as if every line ended in CRLF (RFC822.SIZE).
- Address lists are split into `Address(name, mailbox, host)` parts (see `addresses`).
- `structure` is the root `MimePart`, with the byte offsets of every part (see `mime`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from poczta.message.addresses import Address, parse_addresses
from poczta.message.envelope import ENVELOPE_ADDRESS_FIELDS, Envelope, envelope_from
from poczta.message.header import HeaderField, HeaderLimitExceeded, HeaderSection, split_header
from poczta.message.mime import MimePart, parse_structure
from poczta.message.words import decode_words

__all__ = [
    "ENVELOPE_ADDRESS_FIELDS",
    "Address",
    "Envelope",
    "HeaderField",
    "HeaderLimitExceeded",
    "HeaderSection",
    "MimePart",
    "ParsedMessage",
    "crlf_size",
    "decode_words",
    "parse_addresses",
    "parse_message",
    "parse_structure",
    "split_header",
]


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything poczta keeps about a message besides its bytes."""

    size: int
    header_size: int
    headers: tuple[tuple[str, str], ...]
    envelope: Envelope
    date: datetime | None = None
    subject: str = ""
    search_headers: tuple[tuple[str, str], ...] = field(default=())
    structure: MimePart | None = None  # None only where a parse failed outright

    def header(self, name: str) -> str | None:
        """The first raw (unfolded) value of header `name`, matched case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def crlf_size(data: bytes) -> int:
    """Octets of `data` once every bare LF is counted as CRLF."""
    bare = data.count(b"\n") - data.count(b"\r\n")
    return len(data) + bare


# --- the message ---------------------------------------------------------


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # any malformed date is simply unknown
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_message(data: bytes, header: HeaderSection | None = None) -> ParsedMessage:
    """Parse the header of `data` (already split as `header`, when given) into the facts
    FETCH and SEARCH need; never raises."""
    try:
        return _parse(data, header if header is not None else split_header(data))
    except Exception:  # last resort: the rules above should make this unreachable
        return ParsedMessage(
            size=len(data),
            header_size=0,
            headers=(),
            envelope=Envelope(),
            structure=parse_structure(data),
        )


def _parse(data: bytes, header: HeaderSection) -> ParsedMessage:
    headers = [(f.name.rstrip(b" \t").decode("ascii"), f.text()) for f in header]
    first: dict[str, str] = {}
    search: list[tuple[str, str]] = []
    subject = ""
    for name, value in headers:
        key = name.lower()
        decoded = decode_words(value)
        if key not in first:
            first[key] = value
            if key == "subject":
                subject = decoded
        search.append((key, decoded))
    structure = parse_structure(data, header, first)
    # The body's octets are counted by the structure already: only the header's are left.
    head = structure.body_start
    head_size = head + data.count(b"\n", 0, head) - data.count(b"\r\n", 0, head)
    return ParsedMessage(
        size=head_size + structure.size if structure.body_end == len(data) else crlf_size(data),
        header_size=header.size,
        headers=tuple(headers),
        envelope=envelope_from(first),
        date=_parse_date(first.get("date")),
        subject=subject,
        search_headers=tuple(search),
        structure=structure,
    )
