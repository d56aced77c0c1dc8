"""Trace header fields (RFC 5321 4.4): text fit for a header.

Values a client chose (its EHLO name, the addresses) are validated by the SMTP core
already; `header_text` is the second line of defence for every value copied into a
trace field, so a mistake elsewhere can never end or fold a header early.
"""

from __future__ import annotations


def header_text(value: object) -> str:
    """`value` as text with each character that is not printable replaced by `?`.

    Not printable: CR, LF, every other C0 and C1 control, DEL, TAB, line and
    paragraph separators, format characters and unpaired surrogates.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)
