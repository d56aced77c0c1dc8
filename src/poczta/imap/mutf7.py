"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3) for IMAP4rev1 clients.

Python's codec for RFC 2152 UTF-7 differs in the shift character, the base64
alphabet and what may stand unencoded, so the conversion is written here.
Decoding is strict: a name must be in the canonical form an encoder would produce
(printable ASCII never shifted, no empty or adjacent shifted runs, zero padding
bits, valid UTF-16), otherwise `decode` returns a `Mutf7Error` value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


@dataclass(frozen=True, slots=True)
class Mutf7Error:
    """Why a mailbox name is not valid modified UTF-7."""

    reason: str


def _direct(ch: str) -> bool:
    return "\x20" <= ch <= "\x7e"


def _shifted(run: str) -> str:
    data = base64.b64encode(run.encode("utf-16-be")).rstrip(b"=")
    return "&" + data.decode("ascii").replace("/", ",") + "-"


def encode(name: str) -> str:
    """A Unicode mailbox name in modified UTF-7 ("&" becomes "&-").

    Raises UnicodeEncodeError for a name with a lone surrogate, which no mailbox
    name decoded from UTF-8 can hold.
    """
    if name.isascii() and "&" not in name and name.isprintable():
        return name
    out: list[str] = []
    run_start = -1
    for index, ch in enumerate(name):
        if _direct(ch):
            if run_start >= 0:
                out.append(_shifted(name[run_start:index]))
                run_start = -1
            out.append("&-" if ch == "&" else ch)
        elif run_start < 0:
            run_start = index
    if run_start >= 0:
        out.append(_shifted(name[run_start:]))
    return "".join(out)


def _decode_run(run: str) -> str | Mutf7Error:
    if not run:
        return Mutf7Error("empty shifted sequence")
    if any(ord(ch) not in _B64 for ch in run):
        return Mutf7Error("invalid character in shifted sequence")
    padded = run.replace(",", "/") + "=" * (-len(run) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
        text = data.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError):
        return Mutf7Error("shifted sequence is not valid UTF-16")
    if len(data) % 2:
        return Mutf7Error("shifted sequence has an odd number of octets")
    return text


def decode(name: str | bytes) -> str | Mutf7Error:
    """A modified UTF-7 mailbox name as Unicode, or why it is not valid."""
    if isinstance(name, bytes):
        if not name.isascii():
            return Mutf7Error("8-bit octet in a modified UTF-7 name")
        name = name.decode("ascii")
    if "&" not in name:
        if not name.isascii():
            return Mutf7Error("non-ASCII character in a modified UTF-7 name")
        return name
    out: list[str] = []
    pos = 0
    while True:
        amp = name.find("&", pos)
        if amp < 0:
            out.append(name[pos:])
            break
        out.append(name[pos:amp])
        end = name.find("-", amp + 1)
        if end < 0:
            return Mutf7Error("unterminated shifted sequence")
        if end == amp + 1:
            out.append("&")
        else:
            run = _decode_run(name[amp + 1 : end])
            if isinstance(run, Mutf7Error):
                return run
            out.append(run)
        pos = end + 1
    text = "".join(out)
    if encode(text) != name:
        return Mutf7Error("not in canonical modified UTF-7 form")
    return text
