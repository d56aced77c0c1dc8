"""POP3 wire helpers: multi-line framing, dot-stuffing, TOP trimming and argument syntax.

All pure functions over bytes and strings; the state machine lives in `server.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from poczta.pop3.events import MultiLine, Reply

TERMINATOR = b".\r\n"
_NUMBER = re.compile(r"[0-9]+")


def stuff(data: bytes) -> bytes:
    """Frame message octets as a multi-line body: CRLF lines, dot-stuffed, terminated.

    Bare LF line ends are turned into CRLF; a final line without its end gets one.
    Works in a few bulk passes over the bytes, never line by line.
    """
    if data.count(b"\n") != data.count(b"\r\n"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + TERMINATOR


def unstuff(body: bytes) -> bytes:
    """Inverse of `stuff` for a CRLF body: drop the terminator and the stuffed dots."""
    if not body.endswith(TERMINATOR):
        raise ValueError("multi-line body lacks its terminator")
    data = b"\r\n" + body[: -len(TERMINATOR)]
    return data.replace(b"\r\n..", b"\r\n.")[2:]


def top(data: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` body lines of a message.

    A message without a blank line is all header and is returned whole.
    """
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    ends = [end for start, end in ((crlf, crlf + 4), (lf, lf + 2)) if start >= 0]
    if not ends:
        return data
    pos = min(ends)
    for _ in range(lines):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data
        pos = nl + 1
    return data[:pos]


def multiline(first: Reply, lines: Iterable[str]) -> MultiLine:
    """A multi-line response from text lines (none of which may start with ".")."""
    body = "".join(f"{line}\r\n" for line in lines).encode("utf-8") + TERMINATOR
    return MultiLine(first, body)


def parse_number(arg: str) -> int | None:
    """A message number or line count: ASCII digits only, else None."""
    if _NUMBER.fullmatch(arg) is None:
        return None
    return int(arg)


def shown(text: str) -> str:
    """Client text safe to echo in a reply: printable ASCII, at most 40 characters, else ""."""
    if text.isascii() and text.isprintable() and " " not in text:
        return text[:40]
    return ""


def plural(count: int, noun: str) -> str:
    """ "1 message", "2 messages"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def split_command(text: str) -> tuple[str, str]:
    """Split a command line into its upper-cased keyword and the rest (after one space)."""
    keyword, _, rest = text.partition(" ")
    return keyword.upper(), rest


def words(rest: str) -> list[str]:
    """Arguments separated by spaces (runs of spaces tolerated)."""
    return rest.split()
