"""An appended message made textual: its binary parts stored base64-encoded.

IMAP may carry NUL octets only in a literal8 answering FETCH BINARY (RFC 9051 §4.3,
RFC 3516); BODY[], RFC822 and a POP3 RETR would have to send them raw. So a message
APPENDed with binary content is stored as Dovecot stores it: each leaf part whose
Content-Transfer-Encoding is "binary" gets its body base64-encoded and its field
rewritten to "base64". BINARY[part] decodes it back to the octets the client sent,
and every other view of the message is consistent with the one stored form (sizes,
BODYSTRUCTURE, sections). Multiparts and message/rfc822 parts that claim "binary"
are left as they are: their own content is made of parts, which are converted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from poczta.message import MimePart, parse_structure

__all__ = ["needs_textual_form", "textual_form"]

_LINE_OCTETS = 57  # 76 base64 characters a line (RFC 2045 §6.8)
_BINARY_CTE = re.compile(
    rb"(?im)^(content-transfer-encoding[ \t]*:(?:[ \t]|\r?\n[ \t])*)binary(?=[ \t\r\n;(]|$)"
)


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
    for part in _binary_leaves(structure):
        header = data[part.header_start : part.body_start]
        field = _BINARY_CTE.search(header)
        if field is None:
            continue
        out.append(data[at : part.header_start])
        out.append(header[: field.end(1)] + b"base64" + header[field.end() :])
        out.append(_base64_lines(data[part.body_start : part.body_end], part.body_end == len(data)))
        at = part.body_end
    if not out:
        return data
    out.append(data[at:])
    return b"".join(out)


def _binary_leaves(part: MimePart) -> Iterator[MimePart]:
    """The leaf parts labelled binary, in the order they appear in the message."""
    if part.parts:
        for child in part.parts:
            yield from _binary_leaves(child)
    elif part.message is not None:
        yield from _binary_leaves(part.message.root)
    elif (part.encoding or "").strip().lower() == "binary":
        yield part


def _base64_lines(raw: bytes, last: bool) -> bytes:
    """`raw` as base64 lines joined by CRLF; a final CRLF when the part ends the message
    (inside a multipart the CRLF before the next boundary is already there)."""
    lines = [base64.b64encode(raw[i : i + _LINE_OCTETS]) for i in range(0, len(raw), _LINE_OCTETS)]
    text = b"\r\n".join(lines)
    return text + b"\r\n" if last and text else text
