"""IMAP COMPRESS (RFC 4978): switching a logged-in session to DEFLATE in both directions.

The tagged OK is the last thing written uncompressed; the client's next octet is the
first compressed one, and anything it pipelined after the command (still held by the
reader) is handed to the connection's deflate layer (`poczta.net.deflate`) as
compressed input. Offered after login only, as Dovecot does: before it, STARTTLS
must still come first and a compressed LOGIN would gain nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.logs import log

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

MECHANISMS = ("DEFLATE",)


async def compress(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Compress)
    if command.mechanism.upper() not in MECHANISMS:
        session.bad(command.tag, "Unknown compression mechanism")
    elif session.conn.compressed:
        session.no(command.tag, "Compression is already active", "COMPRESSIONACTIVE")
    else:
        session.ok(command.tag, "DEFLATE active")
        session.conn.start_compression(session.reader.take_buffered())
        log("imap.compress", user=session.user or "", ip=session.conn.peer_ip)
    session.more(session.reader.resume())
