"""What IMAP FETCH shows of a message's MIME structure: BODYSTRUCTURE, BODY, ENVELOPE
values, the byte range of a BODY[section], and BINARY[section] decoding.

Values are nested `ImapValue`s for the IMAP response encoder: `str` for strings,
`None` for NIL, `int` for numbers, `list` for parenthesised lists. A multipart's list
holds its parts' lists first, then its subtype; it is a `MultipartBody`, a list, so
that an encoder may write it as RFC 9051 `body-type-mpart` has it, with no space
between two parts (Dovecot does; clients read either).

The values follow what Dovecot shows (checked against Dovecot 2.3 by hand, see
tests/test_message_mime.py): a text part without a charset parameter gets
`charset=us-ascii` (RFC 2045) appended; the encoding defaults to "7bit"; a
multipart of no parts shows one empty text/plain part; sender and reply-to default
to from in an ENVELOPE. A message/rfc822 part too deep to have been parsed shows an
empty envelope and an empty text/plain body, so the grammar still holds.

Sections are resolved as Dovecot does (RFC 9051 section 6.4.5): on a part that is
not a multipart only the number 1 is valid (the part itself), and only as the last
number unless the part is a message/rfc822, whose following numbers, HEADER and TEXT
refer to the encapsulated message. A section that names no part gives None; Dovecot
answers such a FETCH with an empty string.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Sequence
from typing import TypeAlias

from poczta.message.addresses import Address
from poczta.message.envelope import Envelope
from poczta.message.mime import MimePart
from poczta.message.mime_params import Params

__all__ = [
    "EMPTY_ENVELOPE",
    "ImapValue",
    "MultipartBody",
    "UnknownEncoding",
    "binary_section",
    "binary_size",
    "body",
    "bodystructure",
    "envelope_value",
    "find_part",
    "section_range",
]

ImapValue: TypeAlias = "str | bytes | int | list[ImapValue] | None"

EMPTY_ENVELOPE = Envelope()
_EMPTY_TEXT = MimePart("text", "plain", (), 0, 0, 0, 0, 0)
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_IDENTITY = frozenset({"7bit", "8bit", "binary"})


class MultipartBody(list[ImapValue]):
    """The BODYSTRUCTURE list of a multipart: its parts' lists, then its subtype and
    extension data."""


class UnknownEncoding(enum.Enum):
    """BINARY of a part whose Content-Transfer-Encoding poczta cannot decode: the server
    answers NO [UNKNOWN-CTE] (RFC 3516)."""

    UNKNOWN_CTE = "UNKNOWN-CTE"


# --- BODYSTRUCTURE and BODY ---------------------------------------------


def bodystructure(root: MimePart, extended: bool = True) -> ImapValue:
    """BODYSTRUCTURE of the message whose root part is `root` (BODY when not `extended`)."""
    return _part(root, extended)


def body(root: MimePart) -> ImapValue:
    """BODY (the non-extensible BODYSTRUCTURE) of the message whose root is `root`."""
    return _part(root, False)


def _part(part: MimePart, extended: bool) -> ImapValue:
    if part.parts:
        multipart = MultipartBody(_part(child, extended) for child in part.parts)
        multipart.append(part.subtype)
        if extended:
            multipart += [_params(part.params), *_extension_tail(part)]
        return multipart
    params = part.params
    if part.type == "text" and not any(k.lower() == "charset" for k, _ in params):
        params = (*params, ("charset", "us-ascii"))
    items = [
        part.type,
        part.subtype,
        _params(params),
        part.id,
        part.description,
        part.encoding or "7bit",
        part.size,
    ]
    if part.message is not None:
        message = part.message
        items += [envelope_value(message.envelope), _part(message.root, extended), part.lines]
    elif part.type == "message" and part.subtype in ("rfc822", "global"):
        items += [envelope_value(EMPTY_ENVELOPE), _part(_EMPTY_TEXT, extended), part.lines]
    elif part.type == "text":
        items.append(part.lines)
    if extended:
        items += [part.md5, *_extension_tail(part)]
    return items


def _extension_tail(part: MimePart) -> list[ImapValue]:
    """body-fld-dsp, body-fld-lang and body-fld-loc."""
    disposition: ImapValue = None
    if part.disposition is not None:
        kind, params = part.disposition
        disposition = [kind, _params(params)]
    language: ImapValue = list(part.language) if part.language else None
    return [disposition, language, part.location]


def _params(params: Params) -> ImapValue:
    if not params:
        return None
    flat: list[ImapValue] = []
    for name, value in params:
        flat += [name, value]
    return flat


# --- ENVELOPE -------------------------------------------------------------


def envelope_value(envelope: Envelope) -> ImapValue:
    """The IMAP ENVELOPE of `envelope`; sender and reply-to default to from."""
    sender = envelope.sender or envelope.from_
    reply_to = envelope.reply_to or envelope.from_
    return [
        envelope.date,
        envelope.subject,
        _addresses(envelope.from_),
        _addresses(sender),
        _addresses(reply_to),
        _addresses(envelope.to),
        _addresses(envelope.cc),
        _addresses(envelope.bcc),
        envelope.in_reply_to,
        envelope.message_id,
    ]


def _addresses(addresses: tuple[Address, ...]) -> ImapValue:
    if not addresses:
        return None
    return [[a.name, a.route, a.mailbox, a.host] for a in addresses]


# --- sections ---------------------------------------------------------------


def find_part(root: MimePart, path: Sequence[int], descend: bool = False) -> MimePart | None:
    """The part numbered `path` (e.g. (1, 2) for BODY[1.2]); with `descend`, a
    message/rfc822 part found is replaced by its encapsulated message's root (for
    HEADER and TEXT). None when there is no such part."""
    part = root
    last = len(path) - 1
    for index, number in enumerate(path):
        if part.parts:
            if not 1 <= number <= len(part.parts):
                return None
            part = part.parts[number - 1]
        elif number != 1 or (index < last and part.message is None):
            return None
        if part.message is not None and (index < last or descend):
            part = part.message.root
    return part


def section_range(root: MimePart, path: Sequence[int], text: str = "") -> tuple[int, int] | None:
    """The byte range of BODY[path.text] in the message: `text` is "" (the part's
    body), "MIME", "HEADER" (also for HEADER.FIELDS and HEADER.FIELDS.NOT, which the
    caller filters) or "TEXT". None when the section names no part."""
    text = text.upper()
    if text.startswith("HEADER"):
        text = "HEADER"
    if not path:
        if text == "HEADER":
            return 0, root.body_start
        if text in ("TEXT", ""):
            return (root.body_start, root.body_end) if text else (0, root.body_end)
        return None
    if text == "MIME" or text == "":
        part = find_part(root, path)
        if part is None:
            return None
        if text == "MIME":
            return part.header_start, part.body_start
        return part.body_start, part.body_end
    if text not in ("HEADER", "TEXT"):
        return None
    outer = find_part(root, path)
    if outer is None or outer.message is None:
        return None
    inner = outer.message.root
    if text == "HEADER":
        return inner.header_start, inner.body_start
    return inner.body_start, inner.body_end


# --- BINARY -------------------------------------------------------------------


def binary_section(
    data: bytes, root: MimePart, path: Sequence[int]
) -> bytes | UnknownEncoding | None:
    """BINARY[path] of the message `data`: the part's body with its transfer encoding
    (base64, quoted-printable) removed; UNKNOWN_CTE for an encoding poczta does not
    know; None when there is no such part. BINARY[] is the whole message."""
    if not path:
        return data
    part = find_part(root, path)
    if part is None:
        return None
    raw = data[part.body_start : part.body_end]
    encoding = (part.encoding or "7bit").lower()
    if encoding in _IDENTITY or part.parts:
        return raw
    if encoding == "base64":
        return _decode_base64(raw)
    if encoding == "quoted-printable":
        return decode_quoted_printable(raw)
    return UnknownEncoding.UNKNOWN_CTE


def binary_size(data: bytes, root: MimePart, path: Sequence[int]) -> int | UnknownEncoding | None:
    """BINARY.SIZE[path]: the octets BINARY[path] would return."""
    decoded = binary_section(data, root, path)
    return len(decoded) if isinstance(decoded, bytes) else decoded


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_quoted_printable(raw: bytes) -> bytes:
    """Quoted-printable as RFC 2045 §6.7 has it: trailing white space of a line dropped,
    "=" at a line's end a soft break, =XX an octet, any other "=" kept as it is.
    (binascii.a2b_qp keeps the white space before a line end and misses soft breaks
    followed by it.)"""
    out: list[bytes] = []
    for line in raw.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        ending = b"\r\n" if len(content) < len(line) else b""
        content = content.rstrip(b" \t")
        if content.endswith(b"="):
            content, ending = content[:-1], b""
        out.append(_QP_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), content) + ending)
    return b"".join(out)


def _decode_base64(raw: bytes) -> bytes:
    """Base64 as mail clients read it: anything outside the alphabet is skipped and a
    missing padding is tolerated; decoding stops at the first "="."""
    text = _NOT_BASE64.sub(b"", raw.split(b"=", 1)[0])
    text = text[: len(text) - len(text) % 4] if len(text) % 4 == 1 else text
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # unreachable once cleaned; kept as a guard
        return b""
