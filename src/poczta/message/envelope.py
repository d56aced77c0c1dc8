"""The IMAP ENVELOPE of a header section: raw values of its fields and parsed address lists.

Shared by the top-level parse of a message and by the encapsulated messages of its
message/rfc822 parts, whose ENVELOPE is part of IMAP BODYSTRUCTURE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from poczta.message.addresses import Address, parse_addresses
from poczta.message.header import HeaderField

__all__ = ["ENVELOPE_ADDRESS_FIELDS", "Envelope", "envelope_from", "first_values"]

ENVELOPE_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The IMAP ENVELOPE fields: raw header values and parsed address lists."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


def first_values(fields: Iterable[HeaderField]) -> dict[str, str]:
    """The first unfolded value of each field, by lower-cased name."""
    first: dict[str, str] = {}
    for field in fields:
        key = field.key
        if key not in first:
            first[key] = field.text()
    return first


def envelope_from(first: Mapping[str, str]) -> Envelope:
    """The envelope of a header whose first value of each field is `first` (by lower-cased
    name)."""

    def addresses(name: str) -> tuple[Address, ...]:
        value = first.get(name)
        return parse_addresses(value) if value else ()

    return Envelope(
        date=first.get("date"),
        subject=first.get("subject"),
        from_=addresses("from"),
        sender=addresses("sender"),
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        in_reply_to=first.get("in-reply-to"),
        message_id=first.get("message-id"),
    )
