"""Trace header fields (RFC 5321 4.4): text fit for a header, and the copy final delivery stores.

Values a client chose (its EHLO name, the addresses) are validated by the SMTP core
already; `header_text` is the second line of defence for every value copied into a
trace field, so a mistake elsewhere can never end or fold a header early.
"""

from __future__ import annotations

from poczta.message.header import HeaderSection, split_header
from poczta.message.textual import textual_form


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


def final_delivery_copy(
    data: bytes, header: HeaderSection, sender: str
) -> tuple[bytes, HeaderSection]:
    """The message as final delivery stores it, with its header section: our Return-Path
    first, any the client sent deleted with its folded lines (RFC 5321 4.4: at final
    delivery the field is ours), and a part holding a NUL octet made textual (see
    `poczta.message.textual`)."""
    if b"\x00" in data:
        data = textual_form(data)
        header = split_header(data)
    kept, section = header.without(data, lambda f: f.key == "return-path")
    return section.prepended(kept, return_path(sender))


def with_return_path(data: bytes, sender: str) -> bytes:
    """`final_delivery_copy` of a message not split yet, without its header section."""
    return final_delivery_copy(data, split_header(data), sender)[0]
