"""The author rules of submitted mail: whom a user's message may name as its sender.

After AUTH, the envelope sender is checked at MAIL FROM; the header is checked here, at
the end of DATA, because that is what the recipient's mail client shows. A message
must have exactly one From field naming exactly one address; that address, the
address of a Sender field (at most one) and every address of Resent-From and
Resent-Sender fields must be one the user may send as. Reply-To, To and Cc are free.

The addresses are read strictly (`strict_addresses`): a field a lenient parser would
read as one address while a mail client shows another is refused as malformed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from poczta.message.addresses import strict_addresses
from poczta.message.header import HeaderSection

__all__ = ["author_refusal"]

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
