"""A message made textual: its binary parts stored base64-encoded.

IMAP may carry NUL octets only in a literal8 answering FETCH BINARY (RFC 9051 §4.3,
RFC 3516); BODY[], RFC822 and a POP3 RETR would have to send them raw. So a message
APPENDed with binary content, or delivered over SMTP holding a NUL (which RFC 5321
does not allow, yet careless senders send), is stored as Dovecot stores it: each leaf
part whose Content-Transfer-Encoding is "binary" gets its body base64-encoded and its
field rewritten to "base64". So does a part that claims 7bit or 8bit (or nothing) yet
holds a NUL, its field added when it has none. BINARY[part] decodes it back to the
octets the client sent, and every other view of the message is consistent with the
one stored form (sizes, BODYSTRUCTURE, sections). Multiparts and message/rfc822 parts
that claim "binary" are left as they are: their own content is made of parts, which
are converted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from poczta.message.mime import MimePart, parse_structure

__all__ = ["needs_textual_form", "textual_form"]

_LINE_OCTETS = 57  # 76 base64 characters a line (RFC 2045 §6.8)
_CTE_FIELD = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})
_ADDED_FIELD = b"Content-Transfer-Encoding: base64\r\n"


def needs_textual_form(data: bytes, binary_literal: bool) -> bool:
    """Whether an APPENDed message is to be converted: it came as a literal8 or holds a
    NUL octet (which a plain literal must not carry, but a careless client may send)."""
    return binary_literal or b"\x00" in data


def textual_form(data: bytes, root: MimePart | None = None) -> bytes:
    """`data` with every binary leaf part base64-encoded; `data` itself when it has none.
    `root` is its parsed structure, when known."""
    structure = root if root is not None else parse_structure(data)
    out: list[bytes] = []
    at = 0
    for part in _binary_leaves(structure, data):
        header = _relabelled(data[part.header_start : part.body_start])
        if header is None:
            continue
        out.append(data[at : part.header_start])
        out.append(header)
        out.append(_base64_lines(data[part.body_start : part.body_end], part.body_end == len(data)))
        at = part.body_end
    if not out:
        return data
    out.append(data[at:])
    return b"".join(out)


def _binary_leaves(part: MimePart, data: bytes) -> Iterator[MimePart]:
    """The leaf parts labelled binary or holding a NUL unencoded, in message order."""
    if part.parts:
        for child in part.parts:
            yield from _binary_leaves(child, data)
    elif part.message is not None:
        yield from _binary_leaves(part.message.root, data)
    else:
        encoding = (part.encoding or "").strip().lower()
        if encoding == "binary" or (
            encoding in _IDENTITY and data.find(b"\x00", part.body_start, part.body_end) >= 0
        ):
            yield part


def _relabelled(header: bytes) -> bytes | None:
    """`header` (ending in its blank line) saying base64 as its transfer encoding; None
    when it has no blank line to add the field before."""
    field = _CTE_FIELD.search(header)
    if field is not None:
        return header[: field.end(1)] + b" base64" + header[field.end() :]
    if header.endswith(b"\r\n"):
        return header[:-2] + _ADDED_FIELD + b"\r\n"
    if header.endswith(b"\n"):
        return header[:-1] + _ADDED_FIELD + b"\n"
    return None


def _base64_lines(raw: bytes, last: bool) -> bytes:
    """`raw` as base64 lines joined by CRLF; a final CRLF when the part ends the message
    (inside a multipart the CRLF before the next boundary is already there)."""
    lines = [base64.b64encode(raw[i : i + _LINE_OCTETS]) for i in range(0, len(raw), _LINE_OCTETS)]
    text = b"\r\n".join(lines)
    return text + b"\r\n" if last and text else text
