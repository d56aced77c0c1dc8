"""The values of MIME fields: Content-Type and Content-Disposition with their parameters
(RFC 2045 tokens and quoted strings, RFC 2231 continuations and charset/language), and
Content-Language lists.

Hand-written rather than taken from the `email` package: its header parsing builds
token trees per field at a cost that grows faster than the field, and poczta parses the
fields of every part of every message it accepts. This scanner makes one pass over the
value and never raises; what it cannot read it skips.

Parameters are kept the way Dovecot presents them in IMAP BODYSTRUCTURE, which clients
know: plain parameters in the order written (names as written, duplicates kept), then
the RFC 2231 ones sorted by name, each merged from its continuations (`name*0`,
`name*1*`, ...) into one: `name` when no segment was encoded, `name*` with the joined
raw `charset'language'%XX` text when one was. `param_text` gives a parameter's value
as text, decoding that form.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

__all__ = [
    "Params",
    "param_text",
    "parse_content_type",
    "parse_disposition",
    "parse_language",
    "parse_token",
]

Params = tuple[tuple[str, str], ...]

_WSP = " \t\r\n"
_STOP = ';()"' + _WSP  # ends an unquoted value (lenient: "=" and "/" are allowed in it)
_NAME_STOP = ';=()"' + _WSP
_SECTION = re.compile(r"^(.*?)\*(\d{1,9})(\*?)$|^(.*?)(\*)$")
# The common shapes, read by regular expressions; anything else (comments, stray
# quotes, junk) goes through the scanner.
_TYPE = re.compile(r'[ \t\r\n]*([^/;()"\s]+)[ \t\r\n]*/[ \t\r\n]*([^/;()"\s]+)[ \t\r\n]*')
_PARAM = re.compile(
    r';[ \t\r\n]*([^;=()"\s]+)[ \t\r\n]*=[ \t\r\n]*'
    r'(?:"((?:[^"\\]|\\.)*)"|([^;()"\s]*))[ \t\r\n]*'
)
_ESCAPE = re.compile(r"\\(.)")
_WORD = re.compile(r'[ \t]*([^;()"\s]+)[ \t]*$')


class _Scanner:
    """A cursor over one field value: comments and whitespace skipped between items."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip(self) -> None:
        text, at, end = self.text, self.at, len(self.text)
        while at < end:
            char = text[at]
            if char in _WSP:
                at += 1
            elif char == "(":
                at = _comment_end(text, at)
            else:
                break
        self.at = at

    def word(self, stops: str) -> str:
        """An unquoted run up to one of `stops` (maybe empty)."""
        text, start = self.text, self.at
        at = start
        while at < len(text) and text[at] not in stops:
            at += 1
        self.at = at
        return text[start:at]

    def value(self) -> str:
        self.skip()
        if self.text[self.at : self.at + 1] == '"':
            return self.quoted()
        return self.word(_STOP)

    def quoted(self) -> str:
        text, at = self.text, self.at + 1
        pieces: list[str] = []
        start = at
        while at < len(text):
            char = text[at]
            if char == '"':
                pieces.append(text[start:at])
                self.at = at + 1
                return "".join(pieces)
            if char == "\\" and at + 1 < len(text):
                pieces.append(text[start:at])
                start = at + 1  # the escaped character is kept
                at += 2
                continue
            at += 1
        pieces.append(text[start:])  # unterminated: to the end
        self.at = len(text)
        return "".join(pieces)

    def take(self, char: str) -> bool:
        self.skip()
        if self.text[self.at : self.at + 1] == char:
            self.at += 1
            return True
        return False

    def to_next_parameter(self) -> bool:
        """Skip anything up to and including the next ";"; False at the end."""
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char == ";":
                self.at += 1
                return True
            if char == '"':
                self.quoted()
            elif char == "(":
                self.at = _comment_end(text, self.at)
            else:
                self.at += 1
        return False


def _comment_end(text: str, at: int) -> int:
    """The index just past the (nested) comment opening at `at`, or the end."""
    depth = 0
    end = len(text)
    while at < end:
        char = text[at]
        if char == "\\":
            at += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return end


def _simple_parameters(text: str, at: int) -> list[tuple[str, str]] | None:
    """The parameters of `text[at:]` when they have the common shape, else None."""
    found: list[tuple[str, str]] = []
    end = len(text)
    while at < end:
        match = _PARAM.match(text, at)
        if match is None:
            return None if text[at:].strip(_WSP + ";") else found
        name, quoted, bare = match.groups()
        if quoted is None:
            found.append((name, bare))
        else:
            found.append((name, _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted))
        at = match.end()
    return found


def _parameters(scanner: _Scanner) -> Params:
    if "(" not in scanner.text:
        simple = _simple_parameters(scanner.text, scanner.at)
        if simple is not None:
            return _merged(simple)
    found: list[tuple[str, str]] = []
    while scanner.to_next_parameter():
        scanner.skip()
        name = scanner.word(_NAME_STOP)
        if not name or not scanner.take("="):
            continue
        found.append((name, scanner.value()))
    return _merged(found)


def _merged(found: list[tuple[str, str]]) -> Params:
    """Parameters with RFC 2231 sections merged (see the module docstring)."""
    if all("*" not in name for name, _ in found):
        return tuple(found)
    plain: list[tuple[str, str]] = []
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for name, value in found:
        match = _SECTION.match(name)
        if match is None:
            plain.append((name, value))
        elif match.group(1) is not None:
            base = match.group(1)
            sections.setdefault(base.lower(), []).append(
                (int(match.group(2)), bool(match.group(3)), value)
            )
        else:
            sections.setdefault(match.group(4).lower(), []).append((0, True, value))
    for base in sorted(sections):
        segments = sorted(sections[base], key=lambda s: s[0])
        encoded = any(extended for _, extended, _ in segments)
        plain.append((base + "*" if encoded else base, "".join(v for _, _, v in segments)))
    return tuple(plain)


def parse_content_type(value: str) -> tuple[str, str, Params] | None:
    """(type, subtype, parameters) of a Content-Type value, type and subtype lower-cased;
    None when it has no type/subtype (RFC 2045 then means text/plain)."""
    scanner = _Scanner(value)
    match = _TYPE.match(value)
    if match is not None:
        kind, subtype = match.group(1).lower(), match.group(2).lower()
        scanner.at = match.end()
    else:
        scanner.skip()
        kind = scanner.word("/;" + _STOP).lower()
        if not kind or not scanner.take("/"):
            return None
        scanner.skip()
        subtype = scanner.word("/;" + _STOP).lower()
        if not subtype:
            return None
    return kind, subtype, _parameters(scanner)


def parse_disposition(value: str) -> tuple[str, Params] | None:
    """(disposition type as written, parameters) of a Content-Disposition value."""
    scanner = _Scanner(value)
    scanner.skip()
    kind = scanner.word(_STOP)
    if not kind:
        return None
    return kind, _parameters(scanner)


def parse_language(value: str) -> tuple[str, ...]:
    """The language tags of a Content-Language value, comments removed."""
    scanner = _Scanner(value)
    tags: list[str] = []
    while True:
        scanner.skip()
        if scanner.at >= len(value):
            return tuple(tags)
        tag = scanner.word(",()" + _WSP)
        if tag:
            tags.append(tag)
        elif not scanner.take(","):
            scanner.at += 1  # a stray quote or the like: step over it


def param_text(params: Params, name: str) -> str | None:
    """The value of parameter `name` (any case) as text, an RFC 2231 `name*` value decoded
    from its charset (UTF-8 when unknown); None when absent."""
    wanted = name.lower()
    extended = wanted + "*"
    for key, value in params:
        lowered = key.lower()
        if lowered == wanted:
            return value
        if lowered == extended:
            return _decode_extended(value)
    return None


def _decode_extended(value: str) -> str:
    charset, quote, rest = value.partition("'")
    if not quote:
        return unquote_to_bytes(value).decode("utf-8", "replace")
    _language, _, encoded = rest.partition("'")
    data = unquote_to_bytes(encoded)
    try:
        return data.decode(charset or "us-ascii", "replace")
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL in it)
        return data.decode("utf-8", "replace")


def parse_token(value: str) -> str | None:
    """The first word of a field value such as Content-Transfer-Encoding, comments
    removed; None when there is none."""
    match = _WORD.match(value)
    if match is not None:
        return match.group(1)
    scanner = _Scanner(value)
    scanner.skip()
    word = scanner.word(_STOP)
    return word or None
