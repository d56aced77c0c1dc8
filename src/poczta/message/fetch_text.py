"""The FETCH items kept with every stored message: ENVELOPE and BODYSTRUCTURE as sent.

A client's first look at a mailbox asks for the ENVELOPE and BODYSTRUCTURE of every
message. Building those values from the cached parse and encoding them costs about
0.1 ms a message, which for 10,000 messages is most of the FETCH; so their wire text is
made here once, when the message is stored (`poczta.store.codec.message_columns`), the
store keeps it, and FETCH sends it as it is (`poczta.imap.fetch_cache.cached_item`).

The text is what a client without UTF-8 gets (IMAP4rev1, no UTF8=ACCEPT): a non-ASCII
string is a literal. As long as the text is ASCII it is the same for a UTF-8 client;
otherwise that client's FETCH builds its own from the parse.
"""

from __future__ import annotations

from poczta.message.envelope import Envelope
from poczta.message.imap_body import bodystructure, envelope_value
from poczta.message.imap_wire import encode_value
from poczta.message.mime import MimePart

__all__ = ["bodystructure_text", "envelope_text"]


def envelope_text(envelope: Envelope) -> str:
    """The ENVELOPE value as FETCH writes it (without UTF-8)."""
    return encode_value(envelope_value(envelope)).decode("utf-8")


def bodystructure_text(root: MimePart | None) -> str | None:
    """The BODYSTRUCTURE value as FETCH writes it (without UTF-8); None without a root."""
    if root is None:
        return None
    return encode_value(bodystructure(root)).decode("utf-8")
