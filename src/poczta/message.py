"""Parsed-message facts: header split and unfolding, RFC 2047 decoding, envelope, size, search text.

`parse_message` turns the raw bytes of a message into a `ParsedMessage` once, at
delivery, so that the store can keep the facts IMAP FETCH and SEARCH need and never
parse the message again. It is pure (no I/O) and never raises: garbage in gives a
`ParsedMessage` with whatever could be recognised.

- Header lines end in CRLF; a bare LF is tolerated. The header ends at the first
  empty line (or at the end of the data when there is none).
- Header values are kept raw (unfolded, not decoded), as IMAP ENVELOPE wants them,
  and decoded (RFC 2047 encoded-words, whitespace collapsed) for SEARCH.
- `size` counts octets as if every line ended in CRLF (RFC822.SIZE).
- Address lists are split into `Address(name, mailbox, host)` parts. A group
  (`undisclosed: ;`) is represented the IMAP way: a start marker with `mailbox` set to
  the group name and no host, then its members, then an end marker with all parts None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header
from email.utils import parsedate_to_datetime

__all__ = [
    "ENVELOPE_ADDRESS_FIELDS",
    "Address",
    "Envelope",
    "ParsedMessage",
    "crlf_size",
    "decode_words",
    "parse_addresses",
    "parse_message",
]

ENVELOPE_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address list, split the way IMAP ENVELOPE needs it."""

    name: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.name is None and self.mailbox is None and self.host is None

    @property
    def address(self) -> str | None:
        """`mailbox@host`, or None for group markers."""
        if self.host is None or self.mailbox is None:
            return None
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


@dataclass(frozen=True, slots=True)
class Envelope:
    """The IMAP ENVELOPE fields: raw header values and parsed address lists."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


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

    def header(self, name: str) -> str | None:
        """The first raw (unfolded) value of header `name`, matched case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(r"\r?\n")
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.M)


def crlf_size(data: bytes) -> int:
    """Octets of `data` once every bare LF is counted as CRLF."""
    bare = data.count(b"\n") - data.count(b"\r\n")
    return len(data) + bare


def _split(data: bytes) -> tuple[bytes, int]:
    """The header block and the size (in the data) of header plus blank line."""
    if data.startswith(b"\r\n"):
        return b"", 2
    if data.startswith(b"\n"):
        return b"", 1
    match = _HEADER_END.search(data)
    if match is None:
        return data, len(data)
    return data[: match.start()], match.end()


def _unfold(block: str) -> list[tuple[str, str]]:
    """Header fields as (name, unfolded raw value); lines that are no field are skipped."""
    return [
        (name, value.replace("\r\n", "").replace("\n", "").strip())
        for name, value in _FIELD.findall(block)
    ]


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded and whitespace collapsed; never raises."""
    if "=?" not in value:
        return _WSP_RUN.sub(" ", value) if "  " in value or "\t" in value else value
    try:
        pieces: list[str] = []
        for chunk, charset in decode_header(value):
            if isinstance(chunk, str):
                pieces.append(chunk)
                continue
            pieces.append(_decode_bytes(chunk, charset))
        text = "".join(pieces)
    except Exception:  # malformed encoded-words: keep the raw text
        text = value
    return _WSP_RUN.sub(" ", text).strip()


def _decode_bytes(chunk: bytes, charset: str | None) -> str:
    if charset in (None, "unknown-8bit"):
        return chunk.decode("utf-8", "replace")
    try:
        return chunk.decode(charset, "replace")
    except LookupError:
        return chunk.decode("utf-8", "replace")


# --- address lists -------------------------------------------------------

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"?|([()<>@,;:\\.\[\]])|([^\s()<>@,;:\\".\[\]]+)|\s+')
_QUOTED_PAIR = re.compile(r"\\(.)")


def _tokens(text: str) -> list[tuple[str, str]]:
    """Lexical tokens of an address list: ('q', quoted), ('a', atom), ('s', special)."""
    if "(" in text:
        text = _strip_comments(text)
    out: list[tuple[str, str]] = []
    for quoted, special, atom in _TOKEN.findall(text):
        if atom:
            out.append(("a", atom))
        elif special:
            out.append(("s", special))
        elif quoted:
            out.append(("q", _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted))
    return out


def _strip_comments(text: str) -> str:
    """`text` with (nested) comments outside quoted strings replaced by a space."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in text:
        if escaped:
            escaped = False
            if not depth:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if not depth:
                out.append(ch)
        elif quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif not depth:
            quoted = ch == '"'
            out.append(ch)
    return "".join(out)


def _mailbox(tokens: list[tuple[str, str]]) -> Address | None:
    """One mailbox (`name <local@host>` or `local@host`) from its tokens."""
    if not tokens:
        return None
    angle = next((k for k, t in enumerate(tokens) if t == ("s", "<")), None)
    if angle is not None:
        phrase = " ".join(v for kind, v in tokens[:angle] if kind != "s" or v == ".")
        inner = tokens[angle + 1 :]
        close = next((k for k, t in enumerate(inner) if t == ("s", ">")), len(inner))
        inner = inner[:close]
        colon = next((k for k, t in enumerate(inner) if t == ("s", ":")), None)
        if colon is not None:  # obsolete source route: @a,@b:local@host
            inner = inner[colon + 1 :]
        addr = _addr_spec(inner)
        return Address(phrase or None, addr[0], addr[1])
    local, host = _addr_spec(tokens)
    if not local and not host:
        return None
    return Address(None, local, host)


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str, str]:
    at = next((k for k, t in reversed(list(enumerate(tokens))) if t == ("s", "@")), None)
    if at is None:
        return "".join(v for _, v in tokens), ""
    local = "".join(v for _, v in tokens[:at])
    host = "".join(v for _, v in tokens[at + 1 :])
    return local, host


# The one-mailbox forms nearly every message uses: `local@host`, `<local@host>` and
# `Display Name <local@host>` with no quotes, comments, dots in the name or lists. They
# take a third of the time through one regular expression; anything else is tokenised.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_BARE_MAILBOX = re.compile(rf"[ \t]*(<?)([{_ATEXT}.]+)@([A-Za-z0-9.\-]+)(>?)[ \t]*")
_NAMED_MAILBOX = re.compile(
    rf"[ \t]*([{_ATEXT}][{_ATEXT} \t]*)<([{_ATEXT}.]+)@([A-Za-z0-9.\-]+)>[ \t]*"
)


def _simple_mailbox(value: str) -> tuple[Address, ...] | None:
    bare = _BARE_MAILBOX.fullmatch(value)
    if bare is not None:
        opening, local, host, closing = bare.groups()
        return (Address(None, local, host),) if opening == closing.replace(">", "<") else None
    named = _NAMED_MAILBOX.fullmatch(value)
    if named is not None:
        name, local, host = named.groups()
        return (Address(" ".join(name.split()), local, host),)
    return None


def parse_addresses(value: str) -> tuple[Address, ...]:
    """An address-list header value split into `Address` parts; never raises."""
    simple = _simple_mailbox(value)
    if simple is not None:
        return simple
    try:
        return _parse_address_list(_tokens(value))
    except Exception:  # defensive: the tokenizer should not fail, but garbage is garbage
        return ()


def _parse_address_list(tokens: list[tuple[str, str]]) -> tuple[Address, ...]:
    out: list[Address] = []
    current: list[tuple[str, str]] = []
    in_group = False
    in_angle = False
    for token in tokens:
        if token == ("s", "<"):
            in_angle = True
        elif token == ("s", ">"):
            in_angle = False
        if token == ("s", ":") and not in_group and not in_angle:
            name = " ".join(v for _, v in current)
            out.append(Address(None, name, None))
            in_group, current = True, []
        elif token == ("s", ";") and in_group and not in_angle:
            box = _mailbox(current)
            if box is not None:
                out.append(box)
            out.append(Address(None, None, None))
            in_group, current = False, []
        elif token == ("s", ",") and not in_angle:
            box = _mailbox(current)
            if box is not None:
                out.append(box)
            current = []
        else:
            current.append(token)
    box = _mailbox(current)
    if box is not None:
        out.append(box)
    if in_group:
        out.append(Address(None, None, None))
    return tuple(out)


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


def _envelope(first: dict[str, str]) -> Envelope:
    def addresses(name: str) -> tuple[Address, ...]:
        value = first.get(name)
        return parse_addresses(value) if value else ()

    return Envelope(
        date=first.get("date"),
        subject=first.get("subject"),
        from_=addresses("from"),
        sender=addresses("sender"),
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        in_reply_to=first.get("in-reply-to"),
        message_id=first.get("message-id"),
    )


def parse_message(data: bytes) -> ParsedMessage:
    """Parse the header of `data` into the facts FETCH and SEARCH need; never raises."""
    try:
        return _parse(data)
    except Exception:  # last resort: the rules above should make this unreachable
        return ParsedMessage(size=len(data), header_size=0, headers=(), envelope=Envelope())


def _parse(data: bytes) -> ParsedMessage:
    block, header_size = _split(data)
    headers = _unfold(block.decode("utf-8", "replace")) if block else []
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
    return ParsedMessage(
        size=crlf_size(data),
        header_size=header_size,
        headers=tuple(headers),
        envelope=_envelope(first),
        date=_parse_date(first.get("date")),
        subject=subject,
        search_headers=tuple(search),
    )
