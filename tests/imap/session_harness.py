"""An `ImapSession` run in the test's own event loop over a fake store: what it writes
is recorded, nothing touches a socket. For tests of the session's answers that a
transcript of the core cannot show (news from other sessions, STORE runs)."""

from __future__ import annotations

from typing import Any, cast

from poczta.imap.session.core import ImapContext, ImapSession
from poczta.net.deadlines import ReadTimeouts


class RecordingConnection:
    """The connection a session writes to: a loopback peer, no TLS, every octet kept."""

    is_loopback = True
    tls = None
    peer_ip = "127.0.0.1"
    interrupted = False

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data


def logged_in_session(store: object) -> tuple[ImapSession, RecordingConnection]:
    """A session of alice@example.test over `store` (any object with the store calls
    the test makes), in the authenticated state, and its connection."""
    ctx = ImapContext(
        hostname="mx.example.test",
        service="imap",
        timeouts=ReadTimeouts(60.0, 60.0, 0.0, 3600.0),
        tls=None,
        dev_mode=True,
        logins=cast(Any, None),
        store=cast(Any, store),
    )
    connection = RecordingConnection()
    session = ImapSession(ctx, cast(Any, connection))
    session.user, session.user_id = "alice@example.test", cast(Any, 1)
    return session, connection
