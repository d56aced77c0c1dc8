"""The searchable text of a message body: what SEARCH BODY and TEXT look into.

`body_text(raw)` walks the MIME parts of a message and returns their decoded text:
base64 and quoted-printable undone, every charset turned into Unicode, text/html
reduced to its text (tags dropped, entities resolved; the content of script and
style elements is kept as text, a known simplification), non-text parts skipped, and the
header fields of embedded messages (message/rfc822) included, since they are part of
the outer message's body. The result stops after `limit` characters (10 MB of text by
default); garbage never raises, it just yields less text.

The part walker here is deliberately minimal: one header split per part with
`poczta.message.header.split_header`, boundaries found with `bytes.find`, nesting
bounded by `MAX_DEPTH`, so the cost is linear in the message size times that depth.
It stands in until poczta has a MIME structure parser of its own in `poczta.message`;
then `_walk` should take that parser's parts, and the decoding below stays as it is.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from poczta.message.header import HeaderSection, split_header
from poczta.message.words import decode_words

__all__ = ["DEFAULT_TEXT_LIMIT", "MAX_DEPTH", "Leaf", "body_text", "leaves"]

DEFAULT_TEXT_LIMIT = 10 * 1024 * 1024
MAX_DEPTH = 20

_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^\s;]*)')
_TAG = re.compile(r"<[^<>]*>")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")


@dataclass(slots=True)
class _Text:
    limit: int
    pieces: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def add(self, text: str) -> None:
        room = self.limit - self.size
        if room <= 0 or not text:
            return
        text = text[:room]
        self.pieces.append(text)
        self.size += len(text) + 1


@dataclass(frozen=True, slots=True)
class _ContentType:
    kind: str  # "text/plain", lower-case
    parameters: dict[str, str]

    @property
    def main(self) -> str:
        return self.kind.partition("/")[0]


def _content_type(header: HeaderSection, default: str) -> _ContentType:
    found = header.first("content-type")
    return _ContentType(default, {}) if found is None else _parsed_type(found.text(), default)


@lru_cache(maxsize=1024)
def _parsed_type(value: str, default: str) -> _ContentType:
    """A Content-Type value parsed (kept: most parts of a mailbox have one of a few)."""
    kind = value.partition(";")[0].strip().lower() or default
    if "/" not in kind:
        kind = default
    parameters: dict[str, str] = {}
    for match in _PARAMETER.finditer(value, len(value.partition(";")[0])):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:]
            raw = raw.replace("\\\\", "\0").replace("\\", "").replace("\0", "\\")
        parameters.setdefault(match.group(1).lower(), raw)
    return _ContentType(kind, parameters)


def _transfer_decoded(header: HeaderSection, body: bytes) -> bytes:
    found = header.first("content-transfer-encoding")
    encoding = found.text().strip().lower() if found is not None else ""
    if encoding == "base64":
        return _base64(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _base64(body: bytes) -> bytes:
    """Lenient base64: stray characters skipped, a short last group padded or dropped."""
    compact = _NOT_BASE64.sub(b"", body)
    extra = len(compact) % 4
    if extra == 1:
        compact = compact[:-1]
    elif extra:
        compact += b"=" * (4 - extra)
    try:
        return binascii.a2b_base64(compact)
    except (binascii.Error, ValueError):  # pragma: no cover - the input is made valid above
        return b""


def _unicode(data: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    if name in ("us-ascii", "ascii"):
        name = "utf-8"  # 8-bit text labelled ASCII is in practice UTF-8
    try:
        return data.decode(name, "replace")
    except Exception:  # a codec that fails on its own input: fall back to UTF-8
        return data.decode("utf-8", "replace")


def _html_text(markup: str) -> str:
    # Tags go, their content stays (script and style text too: simple and linear).
    return html.unescape(_TAG.sub(" ", markup))


def _header_text(header: HeaderSection) -> str:
    return "\n".join(f"{f.key}: {decode_words(f.text())}" for f in header)


def _parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines (preamble and epilogue left out)."""
    delimiter = b"--" + boundary
    parts: list[bytes] = []
    position = body.find(delimiter)
    while position != -1:
        if position and body[position - 1 : position] != b"\n":
            position = body.find(delimiter, position + 1)
            continue
        after = position + len(delimiter)
        if body[after : after + 2] == b"--":
            return parts
        line_end = body.find(b"\n", after)
        if line_end == -1:
            return parts
        following = body.find(b"\n" + delimiter, line_end)
        end = len(body) if following == -1 else following
        part = body[line_end + 1 : end]
        parts.append(part[:-1] if part.endswith(b"\r") else part)
        position = -1 if following == -1 else following + 1
    return parts


_PART_FIELDS = ("content-type", "content-transfer-encoding")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One piece of a message's searchable text, not yet decoded: a text part (its
    transfer-decoded octets, charset and whether it is HTML) or the header section of
    an embedded message (`header` set, `octets` empty)."""

    octets: bytes = b""
    charset: str | None = None
    html: bool = False
    header: HeaderSection | None = None

    def text(self) -> str:
        """The piece as `body_text` gives it."""
        if self.header is not None:
            return _header_text(self.header)
        decoded = _unicode(self.octets, self.charset)
        return _html_text(decoded) if self.html else decoded


def leaves(data: bytes, depth: int = 0, default: str = "text/plain") -> Iterator[Leaf]:
    """The pieces of the searchable text of message `data`, in order."""
    header = split_header(data, only=_PART_FIELDS)
    body = header.body(data)
    content_type = _content_type(header, default)
    if content_type.main == "multipart":
        boundary = content_type.parameters.get("boundary", "")
        if not boundary or depth >= MAX_DEPTH:
            return
        inner = "message/rfc822" if content_type.kind == "multipart/digest" else "text/plain"
        for part in _parts(body, boundary.encode("utf-8", "replace")):
            yield from leaves(part, depth + 1, inner)
    elif content_type.kind in ("message/rfc822", "message/global"):
        if depth < MAX_DEPTH:
            embedded = _transfer_decoded(header, body)
            yield Leaf(header=split_header(embedded))
            yield from leaves(embedded, depth + 1)
    elif content_type.main == "text":
        octets = _transfer_decoded(header, body)
        charset = content_type.parameters.get("charset")
        yield Leaf(octets, charset, content_type.kind == "text/html")


def body_text(raw: bytes, limit: int = DEFAULT_TEXT_LIMIT) -> str:
    """The decoded text of the body of message `raw`, at most `limit` characters."""
    text = _Text(limit)
    for leaf in leaves(raw):
        if text.full:
            break
        text.add(leaf.text())
    return "\n".join(text.pieces)
