"""Trace header fields (RFC 5321 4.4): text fit for a header, and Return-Path at final delivery.

Values a client chose (its EHLO name, the addresses) are validated by the SMTP core
already; `header_text` is the second line of defence for every value copied into a
trace field, so a mistake elsewhere can never end or fold a header early.
"""

from __future__ import annotations

import re

_RETURN_PATH = re.compile(rb"return-path[ \t]*:", re.IGNORECASE)


def header_text(value: object) -> str:
    """`value` as text with each character that is not printable replaced by `?`.

    Not printable: CR, LF, every other C0 and C1 control, DEL, TAB, line and
    paragraph separators, format characters and unpaired surrogates.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def return_path(sender: str) -> bytes:
    """The Return-Path field of final delivery: the envelope sender, `<>` for none."""
    return f"Return-Path: <{header_text(sender)}>\r\n".encode()


def with_return_path(data: bytes, sender: str) -> bytes:
    """The message as final delivery stores it: our Return-Path first, the client's gone.

    A Return-Path field the client sent is deleted with its folded lines (RFC 5321
    4.4: at final delivery the field is ours); the header ends at the first empty line.
    """
    kept: list[bytes] = []
    pos, size, dropping, removed = 0, len(data), False, False
    while pos < size:
        lf = data.find(b"\n", pos)
        end = size if lf < 0 else lf + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if not (dropping and line[:1] in (b" ", b"\t")):
            dropping = _RETURN_PATH.match(line) is not None
            removed = removed or dropping
            if not dropping:
                kept.append(line)
        pos = end
    if not removed:
        return return_path(sender) + data
    return return_path(sender) + b"".join(kept) + data[pos:]
