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
Postfix does). Each message: RSET first when the connection carried one before, MAIL
FROM with SIZE, BODY=8BITMIME, SMTPUTF8, RET and ENVID as the server offers them,
RCPT TO per recipient with NOTIFY and ORCPT, then DATA (dot-stuffed) or BDAT chunks
when CHUNKING is offered. With PIPELINING, MAIL, every RCPT and DATA go in one write
(RFC 2920) and the replies are matched in order. A recipient whose RCPT fails is
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
import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

from poczta.smtp.client_body import bdat_chunks, data_pieces, is_8bit, wire_size
from poczta.smtp.client_events import (
    ClientEvent,
    Close,
    Credentials,
    DeliveryStatus,
    HostFailed,
    OutboundMessage,
    Outcome,
    RecipientResult,
    SendBody,
    StartTls,
    TlsPolicy,
    TransactionResult,
    Wait,
    Write,
    reply_outcome,
    temporary,
)
from poczta.smtp.client_params import (
    mail_command,
    needs_smtputf8,
    rcpt_command,
    refuse_locally,
)
from poczta.smtp.client_replies import Extensions, ReplyError, ReplyLimits, ReplyReader
from poczta.smtp.replies import Reply


class SmtpClientError(RuntimeError):
    """The driver called the client out of turn (a programming error)."""


class _Cmd(enum.Enum):
    GREETING = ("the initial greeting", Wait.GREETING)
    EHLO = ("EHLO", Wait.COMMAND)
    HELO = ("HELO", Wait.COMMAND)
    STARTTLS = ("STARTTLS", Wait.COMMAND)
    AUTH = ("AUTH", Wait.COMMAND)
    AUTH_USER = ("AUTH LOGIN", Wait.COMMAND)
    AUTH_PASS = ("AUTH LOGIN username", Wait.COMMAND)
    RSET = ("RSET", Wait.COMMAND)
    MAIL = ("MAIL FROM", Wait.MAIL)
    RCPT = ("RCPT TO", Wait.RCPT)
    DATA = ("DATA", Wait.DATA_INIT)
    DATA_END = ("end of DATA", Wait.DATA_END)
    BDAT = ("BDAT", Wait.DATA_END)
    QUIT = ("QUIT", Wait.COMMAND)

    def __init__(self, stage: str, wait: Wait) -> None:
        self.stage = stage
        self.wait = wait


@dataclass(slots=True)
class _Expect:
    cmd: _Cmd
    index: int = -1  # the recipient a RCPT reply is for
    last: bool = False  # the BDAT chunk with LAST


@dataclass(eq=False, slots=True)
class _Transaction:
    message: OutboundMessage
    pipelined: bool = False
    chunking: bool = False
    results: dict[int, RecipientResult] = field(default_factory=dict)
    sent: list[int] = field(default_factory=list)  # recipients whose RCPT is (to be) sent
    accepted: list[int] = field(default_factory=list)
    refused: Outcome | None = None  # MAIL FROM or a BDAT chunk failed
    chunks: Iterator[tuple[bytes, bool]] | None = None
    utf8: bool = False  # SMTPUTF8 is in use for this envelope
    body_done: bool = False  # the last piece of the current SendBody is handed out


class SmtpClient:
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
        self._expect: deque[_Expect] = deque([_Expect(_Cmd.GREETING)])
        self._out: list[ClientEvent] = []
        self._closed = False
        self._tls_wait = False
        self._ready = False
        self._quitting = False
        self._used = False  # a transaction ran: RSET before the next
        self._sending = False  # the driver is taking pieces of a SendBody
        self._queued: OutboundMessage | None = None
        self._tx: _Transaction | None = None

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
            return Wait.DATA_BLOCK if head.cmd is _Cmd.BDAT and not head.last else head.cmd.wait
        return Wait.IDLE

    @property
    def idle(self) -> bool:
        """True when the session is set up and no message is under way: `send` or `quit`."""
        return self._ready and self._tx is None and not self._closed and not self._quitting

    def send(self, message: OutboundMessage) -> list[ClientEvent]:
        """Deliver one message; before the session is set up it waits for it."""
        if self._closed or self._quitting:
            raise SmtpClientError("the connection is closing")
        if self._tx is not None or self._queued is not None:
            raise SmtpClientError("a message is already under way")
        if not self._ready:
            self._queued = message
            return []
        self._start(message)
        return self._flush()

    def quit(self) -> list[ClientEvent]:
        """End the session politely once no message is under way."""
        if self._closed or self._quitting:
            return []
        if self._tx is not None:
            raise SmtpClientError("a message is under way")
        self._quitting = True
        self._queued = None
        self._command(b"QUIT", _Expect(_Cmd.QUIT))
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
        self._command(b"EHLO " + self.hostname.encode(), _Expect(_Cmd.EHLO))
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

    def _command(self, line: bytes, *expects: _Expect) -> None:
        self._out.append(Write(line + b"\r\n"))
        self._expect.extend(expects)

    def _close(self) -> None:
        self._closed = True
        self._expect.clear()
        self._out.append(Close())

    def _host_failed(self, outcome: Outcome, *, quit: bool = False) -> None:
        """This host is no use now: undecided recipients are temporary, then close."""
        if self._closed:
            return
        enhanced = "4" + outcome.enhanced[1:]
        outcome = replace(outcome, status=DeliveryStatus.TEMPORARY, enhanced=enhanced)
        if self._tx is None and self._queued is not None:
            self._tx = _Transaction(self._queued)
            self._queued = None
        tx = self._tx
        if tx is not None:
            self._decide_rest(tx, outcome)
            self._finish(tx)
        if quit:
            self._out.append(Write(b"QUIT\r\n"))
        self._out.append(HostFailed(outcome))
        self._close()

    def _refused(self, reply: Reply, stage: str, *, quit: bool = True) -> None:
        self._host_failed(reply_outcome(reply, stage, self.peer), quit=quit)

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
        if expect.cmd is _Cmd.QUIT:
            self._close()
        elif reply.code == 421:
            self._refused(reply, expect.cmd.stage, quit=False)
        else:
            self._handlers[expect.cmd](self, reply, expect)

    # ------------------------------------------------------------------ session set-up

    def _greeting(self, reply: Reply, expect: _Expect) -> None:
        if reply.code != 220:
            self._refused(reply, expect.cmd.stage)
            return
        self._command(b"EHLO " + self.hostname.encode(), _Expect(_Cmd.EHLO))

    def _ehlo(self, reply: Reply, expect: _Expect) -> None:
        if reply.code // 100 == 2:
            self.extensions = Extensions.from_ehlo(reply)
            self._hello_done()
        elif reply.code // 100 == 5:
            self._command(b"HELO " + self.hostname.encode(), _Expect(_Cmd.HELO))
        else:
            self._refused(reply, expect.cmd.stage)

    def _helo(self, reply: Reply, expect: _Expect) -> None:
        if reply.code // 100 != 2:
            self._refused(reply, expect.cmd.stage)
            return
        self.extensions = Extensions()
        self._hello_done()

    def _hello_done(self) -> None:
        if not self.tls_active and self.tls_policy is not TlsPolicy.NONE:
            if self.extensions.starttls:
                self._command(b"STARTTLS", _Expect(_Cmd.STARTTLS))
                return
            if self.tls_policy is TlsPolicy.REQUIRED:
                self._host_failed(
                    temporary("4.7.4", f"TLS is required, but was not offered by {self.peer}"),
                    quit=True,
                )
                return
        self._authenticate()

    def _starttls(self, reply: Reply, expect: _Expect) -> None:
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
            self._command(b"AUTH PLAIN " + token, _Expect(_Cmd.AUTH))
        elif "LOGIN" in self.extensions.auth:
            self._command(b"AUTH LOGIN", _Expect(_Cmd.AUTH_USER))
        else:
            text = f"no SASL mechanism in common with {self.peer} (PLAIN or LOGIN)"
            self._host_failed(temporary("4.7.0", text), quit=True)

    def _auth(self, reply: Reply, expect: _Expect) -> None:
        if reply.code // 100 != 2:
            outcome = reply_outcome(reply, expect.cmd.stage, self.peer)
            text = f"SASL authentication failed: {outcome.text}"
            self._host_failed(replace(outcome, text=text), quit=True)
        else:
            self._session_ready()

    def _auth_login(self, reply: Reply, expect: _Expect) -> None:
        if reply.code != 334:
            self._auth(reply, expect)
            return
        creds = self._credentials
        assert creds is not None
        if expect.cmd is _Cmd.AUTH_USER:
            self._command(_b64(creds.username), _Expect(_Cmd.AUTH_PASS))
        else:
            self._command(_b64(creds.password), _Expect(_Cmd.AUTH))

    def _session_ready(self) -> None:
        self._ready = True
        message, self._queued = self._queued, None
        if message is not None:
            self._start(message)

    # ------------------------------------------------------------------ the transaction

    def _start(self, message: OutboundMessage) -> None:
        ext = self.extensions
        tx = _Transaction(message, pipelined=ext.pipelining, chunking=ext.chunking)
        self._tx = tx
        if self._used:
            self._command(b"RSET", _Expect(_Cmd.RSET))
        else:
            self._begin(tx)

    def _rset(self, reply: Reply, expect: _Expect) -> None:
        if reply.code // 100 != 2:
            self._refused(reply, expect.cmd.stage)
        elif self._tx is not None:
            self._begin(self._tx)

    def _begin(self, tx: _Transaction) -> None:
        message, ext = tx.message, self.extensions
        size = wire_size(message.body)
        for index, outcome in refuse_locally(message, ext, size, self.peer):
            self._decide(tx, index, outcome)
        tx.sent = [i for i in range(len(message.recipients)) if i not in tx.results]
        if not tx.sent:
            self._finish(tx)
            return
        self._used = True
        tx.utf8 = ext.smtputf8 and needs_smtputf8(message, tx.sent)
        mail = mail_command(message, ext, size, eight_bit=is_8bit(message.body), utf8=tx.utf8)
        if not tx.pipelined:
            self._command(mail, _Expect(_Cmd.MAIL))
            return
        lines = [mail]
        expects = [_Expect(_Cmd.MAIL)]
        for i in tx.sent:
            lines.append(rcpt_command(message.recipients[i], ext, utf8=tx.utf8))
            expects.append(_Expect(_Cmd.RCPT, i))
        if not tx.chunking:
            lines.append(b"DATA")
            expects.append(_Expect(_Cmd.DATA))
        self._command(b"\r\n".join(lines), *expects)

    def _mail(self, reply: Reply, expect: _Expect) -> None:
        tx = self._tx
        assert tx is not None
        if reply.code // 100 != 2:
            tx.refused = reply_outcome(reply, expect.cmd.stage, self.peer)
            self._decide_rest(tx, tx.refused)
            if not tx.pipelined:
                self._finish(tx)
        elif not tx.pipelined:
            self._next_rcpt(tx, 0)

    def _next_rcpt(self, tx: _Transaction, position: int) -> None:
        if position < len(tx.sent):
            index = tx.sent[position]
            recipient = tx.message.recipients[index]
            line = rcpt_command(recipient, self.extensions, utf8=tx.utf8)
            self._command(line, _Expect(_Cmd.RCPT, index))
        else:
            self._recipients_done(tx)

    def _rcpt(self, reply: Reply, expect: _Expect) -> None:
        tx = self._tx
        assert tx is not None
        if tx.refused is None:
            if reply.code // 100 == 2:
                tx.accepted.append(expect.index)
            else:
                self._decide(tx, expect.index, reply_outcome(reply, expect.cmd.stage, self.peer))
        if not tx.pipelined:
            self._next_rcpt(tx, tx.sent.index(expect.index) + 1)
        elif tx.chunking and expect.index == tx.sent[-1]:
            self._recipients_done(tx)

    def _recipients_done(self, tx: _Transaction) -> None:
        """Every RCPT is answered (and, pipelined, DATA is not part of the group)."""
        if not tx.accepted or tx.refused is not None:
            self._finish(tx)
        elif tx.chunking:
            tx.chunks = bdat_chunks(tx.message.body)
            if tx.pipelined:
                self._send_body(tx, self._all_chunks(tx))
            else:
                self._send_chunk(tx)
        else:
            self._command(b"DATA", _Expect(_Cmd.DATA))

    def _data(self, reply: Reply, expect: _Expect) -> None:
        tx = self._tx
        assert tx is not None
        live = bool(tx.accepted) and tx.refused is None
        if reply.code == 354:
            if live:
                self._expect.append(_Expect(_Cmd.DATA_END))
                self._send_body(tx, data_pieces(tx.message.body))
            else:  # a server that says 354 with no recipient: end the empty message
                tx.body_done = True
                self._command(b".", _Expect(_Cmd.DATA_END))
            return
        if live:
            if reply.code // 100 == 2:
                text = f"protocol error from {self.peer}: {reply.code} in reply to DATA"
                self._host_failed(temporary("4.5.0", text))
                return
            self._decide_rest(tx, reply_outcome(reply, expect.cmd.stage, self.peer))
        self._finish(tx)

    def _early(self, tx: _Transaction) -> bool:
        """A reply to data not yet handed out: the server is out of step."""
        if tx.body_done:
            return False
        text = f"protocol error from {self.peer}: reply before the message data was sent"
        self._host_failed(temporary("4.5.0", text))
        return True

    def _data_end(self, reply: Reply, expect: _Expect) -> None:
        tx = self._tx
        assert tx is not None
        if self._early(tx):
            return
        if tx.accepted and tx.refused is None:
            self._decide_rest(tx, reply_outcome(reply, expect.cmd.stage, self.peer))
        self._finish(tx)

    def _bdat(self, reply: Reply, expect: _Expect) -> None:
        tx = self._tx
        assert tx is not None
        if (expect.last or not tx.pipelined) and self._early(tx):
            return
        if reply.code // 100 != 2 and tx.refused is None:
            tx.refused = reply_outcome(reply, expect.cmd.stage, self.peer)
        if expect.last or (tx.refused is not None and not tx.pipelined):
            self._decide_rest(tx, tx.refused or reply_outcome(reply, expect.cmd.stage, self.peer))
            self._finish(tx)
        elif not tx.pipelined:
            self._send_chunk(tx)

    # ------------------------------------------------------------------ the body

    def _send_body(self, tx: _Transaction, pieces: Iterator[bytes]) -> None:
        self._sending = True
        tx.body_done = False
        self._out.append(SendBody(self._pieces(tx, pieces)))

    def _pieces(self, tx: _Transaction, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """Hand out pieces; the last is marked before it goes, so its reply can follow."""
        try:
            ahead = next(pieces, None)
            while ahead is not None and not self._closed and self._tx is tx:
                piece, ahead = ahead, next(pieces, None)
                tx.body_done = ahead is None
                yield piece
        finally:
            if self._tx is tx or self._tx is None:
                self._sending = False

    def _all_chunks(self, tx: _Transaction) -> Iterator[bytes]:
        assert tx.chunks is not None
        for chunk, last in tx.chunks:
            self._expect.append(_Expect(_Cmd.BDAT, last=last))
            yield chunk

    def _send_chunk(self, tx: _Transaction) -> None:
        assert tx.chunks is not None
        chunk, last = next(tx.chunks)
        self._expect.append(_Expect(_Cmd.BDAT, last=last))
        self._send_body(tx, iter((chunk,)))

    # ------------------------------------------------------------------ results

    def _decide(self, tx: _Transaction, index: int, outcome: Outcome) -> None:
        if index in tx.results:
            return
        result = RecipientResult(tx.message.recipients[index].address, outcome)
        tx.results[index] = result
        self._out.append(result)

    def _decide_rest(self, tx: _Transaction, outcome: Outcome) -> None:
        for index in range(len(tx.message.recipients)):
            self._decide(tx, index, outcome)

    def _finish(self, tx: _Transaction) -> None:
        if self._tx is not tx:
            return
        results = tuple(tx.results[i] for i in sorted(tx.results))
        self._out.append(TransactionResult(tx.message, results))
        self._tx = None

    _handlers: ClassVar[dict[_Cmd, Callable[[SmtpClient, Reply, _Expect], None]]] = {
        _Cmd.GREETING: _greeting,
        _Cmd.EHLO: _ehlo,
        _Cmd.HELO: _helo,
        _Cmd.STARTTLS: _starttls,
        _Cmd.AUTH: _auth,
        _Cmd.AUTH_USER: _auth_login,
        _Cmd.AUTH_PASS: _auth_login,
        _Cmd.RSET: _rset,
        _Cmd.MAIL: _mail,
        _Cmd.RCPT: _rcpt,
        _Cmd.DATA: _data,
        _Cmd.DATA_END: _data_end,
        _Cmd.BDAT: _bdat,
    }


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))
