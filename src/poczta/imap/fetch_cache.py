"""Sending the FETCH items a message keeps (ENVELOPE and BODYSTRUCTURE wire text) when
they suit the client.

The text is made when the message is stored (`poczta.message.fetch_text`) in the form a
client without UTF-8 gets; a UTF-8 client gets the same only while it is ASCII, else its
FETCH builds the value from the parse.
"""

from __future__ import annotations

from poczta.message.imap_wire import Encoded

__all__ = ["cached_item"]


def cached_item(text: str | None, utf8: bool) -> Encoded | None:
    """The kept text as a value to send, when it is right for the client's dialect."""
    if text is None or (utf8 and not text.isascii()):
        return None
    return Encoded(text)
