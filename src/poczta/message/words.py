"""RFC 2047 encoded-words in header values, decoded to text in one linear pass.

Written here rather than taken from `email.header.decode_header` because that one is
quadratic in the number of encoded-words (it deletes list items one by one and grows
the decoded bytes by concatenation), and a header is the sender's to fill.

Decoding follows what mail clients do: an encoded-word is recognised wherever it
stands, whitespace between two encoded-words is dropped (RFC 2047 section 6.2),
adjacent words in one charset are joined before decoding (a character may be split
across them), an unknown charset decodes as UTF-8 and a malformed word stays as it
was written. Runs of whitespace collapse to one space.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode_words"]

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def decode_words(value: str) -> str:
    """`value` with its encoded-words decoded and whitespace collapsed; never raises."""
    if "=?" not in value:
        return _WSP_RUN.sub(" ", value) if "  " in value or "\t" in value else value
    pieces: list[str] = []
    run: list[bytes] = []  # decoded bytes of adjacent encoded-words in `charset`
    charset = ""
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        decoded = _decode_word(match.group(2), match.group(3))
        if decoded is None:  # malformed: keep it as text
            continue
        if between and not (run and between.isspace()):
            _flush(pieces, run, charset)
            pieces.append(between)
        word_charset = match.group(1).partition("*")[0].lower()  # RFC 2231 language dropped
        if run and word_charset != charset:
            _flush(pieces, run, charset)
        charset = word_charset
        run.append(decoded)
        position = match.end()
    _flush(pieces, run, charset)
    pieces.append(value[position:])
    return _WSP_RUN.sub(" ", "".join(pieces)).strip()


def _decode_word(encoding: str, text: str) -> bytes | None:
    raw = text.encode("ascii", "replace")
    if encoding in "Bb":
        if not _BASE64.fullmatch(text):
            return None
        try:
            return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    return _Q_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw.replace(b"_", b" "))


def _flush(pieces: list[str], run: list[bytes], charset: str) -> None:
    if not run:
        return
    data = b"".join(run)
    run.clear()
    try:
        pieces.append(data.decode(charset, "replace"))
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL in it)
        pieces.append(data.decode("utf-8", "replace"))
