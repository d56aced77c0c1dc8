"""The author rules of submitted mail: whom a user's message may name as its sender.

After AUTH, the envelope sender is checked at MAIL FROM; the header is checked here, at
the end of DATA, because that is what the recipient's mail client shows. A message
must have exactly one From field naming exactly one address; that address, the
address of a Sender field (at most one) and every address of Resent-From and
Resent-Sender fields must be one the user may send as. Reply-To, To and Cc are free.

The addresses are read strictly (`strict_addresses`): a field a lenient parser would
read as one address while a mail client shows another is refused as malformed.

`completed` adds the Date and Message-ID fields a client left out (RFC 6409 §8.3, §8.2),
so that they are there to be signed.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import format_datetime

from poczta.message.addresses import strict_addresses
from poczta.message.header import HeaderSection

__all__ = ["author_address", "author_refusal", "completed"]

MaySendAs = Callable[[str, str], Awaitable[bool]]

_SINGLE = (("from", "From"), ("sender", "Sender"))
_RESENT = (("resent-from", "Resent-From"), ("resent-sender", "Resent-Sender"))


async def author_refusal(header: HeaderSection, user: str, may_send_as: MaySendAs) -> str | None:
    """Why `user` may not send a message with this header, or None when it may."""
    from_fields = header.named("from")
    if len(from_fields) != 1:
        return f"Message must have exactly one From: header (it has {len(from_fields)})"
    named: list[tuple[str, str]] = []
    for key, title in _SINGLE:
        fields = header.named(key)
        if len(fields) > 1:
            return f"Message must not have more than one {title}: header"
        for field in fields:
            addresses = strict_addresses(field.text())
            if addresses is None or len(addresses) != 1:
                return f"{title}: header must hold exactly one well-formed address"
            named.append((title, addresses[0]))
    for key, title in _RESENT:
        for field in header.named(key):
            addresses = strict_addresses(field.text())
            if not addresses:
                return f"{title}: header must hold well-formed addresses"
            named.extend((title, address) for address in addresses)
    for title, address in named:
        if not await may_send_as(user, address):
            return f"{title}: <{address}> is not an address of the authenticated user {user}"
    return None


def author_address(header: HeaderSection) -> str | None:
    """The one address of the one From field (as `author_refusal` demands), else None."""
    fields = header.named("from")
    if len(fields) != 1:
        return None
    addresses = strict_addresses(fields[0].text())
    return addresses[0] if addresses and len(addresses) == 1 else None


def completed(
    data: bytes, header: HeaderSection, hostname: str, now: datetime
) -> tuple[bytes, HeaderSection]:
    """`data` with a Date and a Message-ID field added where the client sent none."""
    missing = b""
    if not header.named("date"):
        missing += f"Date: {format_datetime(now)}\r\n".encode()
    if not header.named("message-id"):
        token = secrets.token_hex(12)
        missing += f"Message-ID: <{now:%Y%m%d%H%M%S}.{token}@{hostname}>\r\n".encode()
    return header.prepended(data, missing) if missing else (data, header)
