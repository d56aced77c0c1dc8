"""The sans-I/O SMTP client for outbound delivery (RFC 5321, ESMTP): bytes in, events out.

`SmtpClient` never awaits, reads a clock or touches a socket. The driver connects,
feeds what the server sends to `receive`, calls `eof` when the server closes,
`tls_started` or `tls_failed` after a `StartTls` event, and `timed_out` when the wait
that `waiting_for` names has lasted its `timeout`. It hands over messages with `send`
(one at a time; the next after the `TransactionResult` of the last, on the same
connection) and ends with `quit`. Every call returns events: `Write` and `SendBody`
(bytes to send), `StartTls`, `RecipientResult`, `TransactionResult`, `HostFailed`,
`Close` (see `poczta.smtp.client_events`).

The dialogue: the greeting (anything but 220 is a host failure, so the driver tries
the next MX), EHLO (HELO after a 5xx), STARTTLS whenever offered unless the policy is
NONE (with REQUIRED, no STARTTLS or a refused one is a host failure), EHLO again over
TLS, then AUTH PLAIN or LOGIN when credentials are given (only over TLS unless
plaintext is explicitly allowed; a refusal is a host failure, so a deferral, as
Postfix does). Each message: RSET first when the connection carried one before (unless
the driver says the server has reset itself, see `send`), MAIL
FROM with SIZE, BODY=8BITMIME, SMTPUTF8, RET and ENVID as the server offers them,
RCPT TO per recipient with NOTIFY and ORCPT, then DATA (dot-stuffed) or BDAT chunks
when CHUNKING is offered. With PIPELINING, the RSET, MAIL, every RCPT and DATA go in
one write (RFC 2920) and the replies are matched in order; a refused RSET is a host
failure there too, before any reply that follows it is read. A recipient whose RCPT fails is
decided there; the end-of-data reply decides every accepted one. When no recipient
is accepted no data is sent; the RSET before the next message (or QUIT) closes the
transaction.

Decided before anything is sent, from the EHLO reply: a message larger than the
server's SIZE is a permanent failure for all recipients; a UTF-8 address to a server
without SMTPUTF8 fails permanently (the sender's for all recipients). An 8-bit body to
a server without 8BITMIME is sent as it is, without a BODY parameter: converting to
quoted-printable means rewriting MIME structure and breaks DKIM signatures, and
servers that refuse 8-bit octets are rare; the server's own reply then decides.

A 421 at any point, a lost connection, a timeout or a reply that is no SMTP reply
(`poczta.smtp.client_replies`) ends the connection: every recipient not yet decided is
temporary and `HostFailed` follows. Bytes the server sends after its 220 to STARTTLS
and before the handshake are dropped, never read as replies over TLS.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

from poczta.smtp.client_events import (
    ClientEvent,
    Credentials,
    DeliveryStatus,
    HostFailed,
    OutboundMessage,
    Outcome,
    StartTls,
    TlsPolicy,
    Wait,
    Write,
    reply_outcome,
    temporary,
)
from poczta.smtp.client_replies import Extensions, ReplyError, ReplyLimits, ReplyReader
from poczta.smtp.client_transaction import Cmd, Expect, Transaction, TransactionSteps
from poczta.smtp.replies import Reply


class SmtpClientError(RuntimeError):
    """The driver called the client out of turn (a programming error)."""


class SmtpClient(TransactionSteps):
    """One outbound SMTP connection as a state machine."""

    def __init__(
        self,
        *,
        hostname: str,
        peer: str = "",
        tls_policy: TlsPolicy = TlsPolicy.OPPORTUNISTIC,
        tls_active: bool = False,
        credentials: Credentials | None = None,
        allow_plaintext_auth: bool = False,
        reply_limits: ReplyLimits | None = None,
    ) -> None:
        self.hostname = hostname
        self.peer = peer or "the server"
        self.tls_policy = tls_policy
        self.tls_active = tls_active
        self.extensions = Extensions()
        self._credentials = credentials
        self._plaintext_auth = allow_plaintext_auth
        self._limits = reply_limits
        self._reader = ReplyReader(reply_limits)
        self._expect: deque[Expect] = deque([Expect(Cmd.GREETING)])
        self._out: list[ClientEvent] = []
        self._closed = False
        self._tls_wait = False
        self._ready = False
        self._quitting = False
        self._used = False  # a transaction ran: RSET before the next
        self._reset_by_server = False  # the last one ended with the reply to its data
        self._sending = False  # the driver is taking pieces of a SendBody
        self._queued: OutboundMessage | None = None
        self._tx: Transaction | None = None

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_for(self) -> Wait:
        """What the client waits for now; its `timeout` is the driver's to enforce."""
        if self._closed:
            return Wait.CLOSED
        if self._tls_wait:
            return Wait.TLS
        if self._sending:
            return Wait.DATA_BLOCK
        if self._expect:
            head = self._expect[0]
            return Wait.DATA_BLOCK if head.cmd is Cmd.BDAT and not head.last else head.cmd.wait
        return Wait.IDLE

    @property
    def idle(self) -> bool:
        """True when the session is set up and no message is under way: `send` or `quit`."""
        return self._ready and self._tx is None and not self._closed and not self._quitting

    def send(self, message: OutboundMessage, *, rset: bool = True) -> list[ClientEvent]:
        """Deliver one message; before the session is set up it waits for it.

        With `rset=False` no RSET goes before the message when the last transaction
        ended with the reply to its data (the server reset itself, RFC 5321 4.1.1.4):
        the driver sends the rest of one delivery at once. An aborted transaction is
        always reset."""
        if self._closed or self._quitting:
            raise SmtpClientError("the connection is closing")
        if self._tx is not None or self._queued is not None:
            raise SmtpClientError("a message is already under way")
        if not self._ready:
            self._queued = message
            return []
        self._start(message, rset=rset)
        return self._flush()

    def quit(self) -> list[ClientEvent]:
        """End the session politely once no message is under way."""
        if self._closed or self._quitting:
            return []
        if self._tx is not None:
            raise SmtpClientError("a message is under way")
        self._quitting = True
        self._queued = None
        self._command(b"QUIT", Expect(Cmd.QUIT))
        return self._flush()

    def receive(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server."""
        if self._closed or self._tls_wait:
            return []
        self._reader.feed(data)
        for item in self._reader.replies():
            if self._closed or self._tls_wait:
                break
            if isinstance(item, ReplyError):
                self._host_failed(
                    temporary("4.5.0", f"protocol error from {self.peer}: {item.reason}")
                )
            else:
                self._reply(item)
        return self._flush()

    def eof(self) -> list[ClientEvent]:
        """The server closed the connection."""
        if self._closed:
            return []
        if self._quitting or not (self._expect or self._tx or self._tls_wait or self._sending):
            self._close()
        else:
            wait = self.waiting_for.label
            self._host_failed(temporary("4.4.2", f"lost connection with {self.peer} ({wait})"))
        return self._flush()

    def timed_out(self) -> list[ClientEvent]:
        """The wait `waiting_for` names lasted longer than its timeout."""
        if self._closed:
            return []
        wait = self.waiting_for.label
        self._host_failed(temporary("4.4.2", f"conversation with {self.peer} timed out ({wait})"))
        return self._flush()

    def tls_started(self) -> list[ClientEvent]:
        """The TLS handshake after `StartTls` succeeded: EHLO again (RFC 3207)."""
        if not self._tls_wait:
            raise SmtpClientError("no STARTTLS is pending")
        self._tls_wait = False
        self.tls_active = True
        self.extensions = Extensions()
        self._reader = ReplyReader(self._limits)
        self._command(b"EHLO " + self.hostname.encode(), Expect(Cmd.EHLO))
        return self._flush()

    def tls_failed(self, reason: str) -> list[ClientEvent]:
        """The TLS handshake failed; the connection is unusable."""
        if not self._tls_wait:
            raise SmtpClientError("no STARTTLS is pending")
        self._tls_wait = False
        self._host_failed(temporary("4.7.5", f"TLS handshake with {self.peer} failed: {reason}"))
        return self._flush()

    # ------------------------------------------------------------------ plumbing

    def _flush(self) -> list[ClientEvent]:
        out, self._out = self._out, []
        return out

    def _host_failed(self, outcome: Outcome, *, quit: bool = False) -> None:
        """This host is no use now: undecided recipients are temporary, then close."""
        if self._closed:
            return
        enhanced = "4" + outcome.enhanced[1:]
        outcome = replace(outcome, status=DeliveryStatus.TEMPORARY, enhanced=enhanced)
        if self._tx is None and self._queued is not None:
            self._tx = Transaction(self._queued)
            self._queued = None
        tx = self._tx
        if tx is not None:
            self._decide_rest(tx, outcome)
            self._finish(tx)
        if quit:
            self._out.append(Write(b"QUIT\r\n"))
        self._out.append(HostFailed(outcome))
        self._close()

    def _reply(self, reply: Reply) -> None:
        if not self._expect:
            if reply.code == 421:
                self._refused(reply, "no command", quit=False)
            else:
                self._host_failed(
                    temporary("4.5.0", f"protocol error from {self.peer}: unexpected reply")
                )
            return
        expect = self._expect.popleft()
        if expect.cmd is Cmd.QUIT:
            self._close()
        elif reply.code == 421:
            self._refused(reply, expect.cmd.stage, quit=False)
        else:
            self._handlers[expect.cmd](self, reply, expect)

    # ------------------------------------------------------------------ session set-up

    def _greeting(self, reply: Reply, expect: Expect) -> None:
        if reply.code != 220:
            self._refused(reply, expect.cmd.stage)
            return
        self._command(b"EHLO " + self.hostname.encode(), Expect(Cmd.EHLO))

    def _ehlo(self, reply: Reply, expect: Expect) -> None:
        if reply.code // 100 == 2:
            self.extensions = Extensions.from_ehlo(reply)
            self._hello_done()
        elif reply.code // 100 == 5:
            self._command(b"HELO " + self.hostname.encode(), Expect(Cmd.HELO))
        else:
            self._refused(reply, expect.cmd.stage)

    def _helo(self, reply: Reply, expect: Expect) -> None:
        if reply.code // 100 != 2:
            self._refused(reply, expect.cmd.stage)
            return
        self.extensions = Extensions()
        self._hello_done()

    def _hello_done(self) -> None:
        if not self.tls_active and self.tls_policy is not TlsPolicy.NONE:
            if self.extensions.starttls:
                self._command(b"STARTTLS", Expect(Cmd.STARTTLS))
                return
            if self.tls_policy is TlsPolicy.REQUIRED:
                self._host_failed(
                    temporary("4.7.4", f"TLS is required, but was not offered by {self.peer}"),
                    quit=True,
                )
                return
        self._authenticate()

    def _starttls(self, reply: Reply, expect: Expect) -> None:
        if reply.code == 220:
            self._tls_wait = True
            self._out.append(StartTls())
        elif self.tls_policy is TlsPolicy.REQUIRED:
            outcome = reply_outcome(reply, expect.cmd.stage, self.peer)
            text = f"TLS is required, but STARTTLS failed: {outcome.text}"
            self._host_failed(replace(outcome, text=text), quit=True)
        else:
            self._authenticate()  # opportunistic: carry on in plaintext

    def _authenticate(self) -> None:
        creds = self._credentials
        if creds is None:
            self._session_ready()
            return
        if not self.tls_active and not self._plaintext_auth:
            text = f"not sending credentials to {self.peer} without TLS"
            self._host_failed(temporary("4.7.0", text), quit=True)
        elif "PLAIN" in self.extensions.auth:
            token = _b64(f"\0{creds.username}\0{creds.password}")
            self._command(b"AUTH PLAIN " + token, Expect(Cmd.AUTH))
        elif "LOGIN" in self.extensions.auth:
            self._command(b"AUTH LOGIN", Expect(Cmd.AUTH_USER))
        else:
            text = f"no SASL mechanism in common with {self.peer} (PLAIN or LOGIN)"
            self._host_failed(temporary("4.7.0", text), quit=True)

    def _auth(self, reply: Reply, expect: Expect) -> None:
        if reply.code // 100 != 2:
            outcome = reply_outcome(reply, expect.cmd.stage, self.peer)
            text = f"SASL authentication failed: {outcome.text}"
            self._host_failed(replace(outcome, text=text), quit=True)
        else:
            self._session_ready()

    def _auth_login(self, reply: Reply, expect: Expect) -> None:
        if reply.code != 334:
            self._auth(reply, expect)
            return
        creds = self._credentials
        assert creds is not None
        if expect.cmd is Cmd.AUTH_USER:
            self._command(_b64(creds.username), Expect(Cmd.AUTH_PASS))
        else:
            self._command(_b64(creds.password), Expect(Cmd.AUTH))

    def _session_ready(self) -> None:
        self._ready = True
        message, self._queued = self._queued, None
        if message is not None:
            self._start(message)

    _handlers: ClassVar[dict[Cmd, Callable[[SmtpClient, Reply, Expect], None]]] = {
        Cmd.GREETING: _greeting,
        Cmd.EHLO: _ehlo,
        Cmd.HELO: _helo,
        Cmd.STARTTLS: _starttls,
        Cmd.AUTH: _auth,
        Cmd.AUTH_USER: _auth_login,
        Cmd.AUTH_PASS: _auth_login,
        Cmd.RSET: TransactionSteps._rset,
        Cmd.MAIL: TransactionSteps._mail,
        Cmd.RCPT: TransactionSteps._rcpt,
        Cmd.DATA: TransactionSteps._data,
        Cmd.DATA_END: TransactionSteps._data_end,
        Cmd.BDAT: TransactionSteps._bdat,
    }


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))
