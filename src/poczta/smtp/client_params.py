"""The SMTP client's envelope commands: MAIL FROM and RCPT TO lines, and what is refused first.

Parameters go only where the server announced the extension: SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152) for a body with 8-bit octets, SMTPUTF8 (RFC 6531), and the
DSN parameters RET, ENVID, NOTIFY and ORCPT (RFC 3461; ORCPT as `rfc822;xtext`, or
`utf-8;` with RFC 6533 escapes for a UTF-8 address when SMTPUTF8 is in use, and left
out otherwise). Without DSN they are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

from poczta.smtp.client_body import encode_utf8_addr, encode_xtext
from poczta.smtp.client_events import OutboundMessage, OutboundRecipient, Outcome, permanent
from poczta.smtp.client_replies import Extensions


def needs_smtputf8(message: OutboundMessage, recipients: list[int]) -> bool:
    """Whether the envelope (or the message, by its flag) needs SMTPUTF8."""
    return (
        message.smtputf8
        or not message.sender.isascii()
        or not all(message.recipients[i].address.isascii() for i in recipients)
    )


def refuse_locally(
    message: OutboundMessage, ext: Extensions, size: int, peer: str
) -> Iterator[tuple[int, Outcome]]:
    """Recipients this server cannot take, known from its EHLO reply alone."""
    everyone = range(len(message.recipients))
    if ext.size is not None and size > ext.size:
        text = f"message size {size} exceeds size limit {ext.size} of {peer}"
        outcome = permanent("5.3.4", text, "MAIL FROM")
        yield from ((i, outcome) for i in everyone)
        return
    if ext.smtputf8:
        return
    text = f"SMTPUTF8 is required, but was not offered by {peer}"
    if not message.sender.isascii():
        yield from ((i, permanent("5.6.7", text, "MAIL FROM")) for i in everyone)
        return
    for i in everyone:
        if not message.recipients[i].address.isascii():
            yield i, permanent("5.6.7", text, "RCPT TO")


def mail_command(
    message: OutboundMessage, ext: Extensions, size: int, *, eight_bit: bool, utf8: bool
) -> bytes:
    """The MAIL FROM line for this message and server (no CRLF)."""
    parts = [f"MAIL FROM:<{message.sender}>"]
    if ext.size_offered:
        parts.append(f"SIZE={size}")
    if eight_bit and ext.eightbitmime:
        parts.append("BODY=8BITMIME")
    if utf8 and ext.smtputf8:
        parts.append("SMTPUTF8")
    if ext.dsn:
        if message.ret is not None:
            parts.append(f"RET={message.ret.upper()}")
        if message.envid is not None:
            parts.append(f"ENVID={encode_xtext(message.envid)}")
    return " ".join(parts).encode("utf-8")


def rcpt_command(recipient: OutboundRecipient, ext: Extensions, *, utf8: bool) -> bytes:
    """The RCPT TO line for one recipient (no CRLF)."""
    parts = [f"RCPT TO:<{recipient.address}>"]
    if ext.dsn:
        if recipient.notify:
            parts.append("NOTIFY=" + ",".join(n.upper() for n in recipient.notify))
        orcpt = recipient.orcpt
        if orcpt is not None and orcpt.isascii():
            parts.append(f"ORCPT=rfc822;{encode_xtext(orcpt)}")
        elif orcpt is not None and utf8 and ext.smtputf8:
            parts.append(f"ORCPT=utf-8;{encode_utf8_addr(orcpt)}")
    return " ".join(parts).encode("utf-8")
