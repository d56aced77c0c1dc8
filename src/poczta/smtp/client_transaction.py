"""The SMTP client's mail transaction: MAIL, RCPT, DATA or BDAT, the body, each recipient's result.

`TransactionSteps` is the half of `poczta.smtp.client.SmtpClient` that runs one
message once the session is set up; the module docstring there tells the rules.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from poczta.smtp.client_body import bdat_chunks, data_pieces, is_8bit, wire_size
from poczta.smtp.client_events import (
    ClientEvent,
    Close,
    OutboundMessage,
    Outcome,
    RecipientResult,
    SendBody,
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
from poczta.smtp.client_replies import Extensions
from poczta.smtp.replies import Reply


class Cmd(enum.Enum):
    """A command whose reply is awaited: the stage named in outcomes, and its wait."""

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
class Expect:
    """One awaited reply, in the order the commands went out."""

    cmd: Cmd
    index: int = -1  # the recipient a RCPT reply is for
    last: bool = False  # the BDAT chunk with LAST


@dataclass(eq=False, slots=True)
class Transaction:
    """The message under way on the connection."""

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


class TransactionSteps:
    """The mail transaction: envelope commands, body, results (the base of `SmtpClient`)."""

    peer: str
    extensions: Extensions
    _expect: deque[Expect]
    _out: list[ClientEvent]
    _closed: bool
    _used: bool
    _reset_by_server: bool
    _sending: bool
    _tx: Transaction | None

    def _host_failed(self, outcome: Outcome, *, quit: bool = False) -> None:
        raise NotImplementedError

    def _command(self, line: bytes, *expects: Expect) -> None:
        self._out.append(Write(line + b"\r\n"))
        self._expect.extend(expects)

    def _close(self) -> None:
        self._closed = True
        self._expect.clear()
        self._out.append(Close())

    def _refused(self, reply: Reply, stage: str, *, quit: bool = True) -> None:
        self._host_failed(reply_outcome(reply, stage, self.peer), quit=quit)

    # ------------------------------------------------------------------ the transaction

    def _start(self, message: OutboundMessage, *, rset: bool = True) -> None:
        ext = self.extensions
        tx = Transaction(message, pipelined=ext.pipelining, chunking=ext.chunking)
        self._tx = tx
        reset = self._used and (rset or not self._reset_by_server)
        if reset and not tx.pipelined:
            self._command(b"RSET", Expect(Cmd.RSET))  # MAIL after its reply
        else:
            self._begin(tx, reset=reset)

    def _rset(self, reply: Reply, expect: Expect) -> None:
        if reply.code // 100 != 2:
            self._refused(reply, expect.cmd.stage)
        elif self._tx is not None and not self._tx.pipelined:
            self._begin(self._tx)  # pipelined, the envelope went with the RSET

    def _begin(self, tx: Transaction, *, reset: bool = False) -> None:
        """The envelope; pipelined, in one write with the RSET before it if `reset`."""
        message, ext = tx.message, self.extensions
        size = wire_size(message.body)
        for index, outcome in refuse_locally(message, ext, size, self.peer):
            self._decide(tx, index, outcome)
        tx.sent = [i for i in range(len(message.recipients)) if i not in tx.results]
        if not tx.sent:
            self._finish(tx)
            return
        self._used = True
        self._reset_by_server = False
        tx.utf8 = ext.smtputf8 and needs_smtputf8(message, tx.sent)
        mail = mail_command(message, ext, size, eight_bit=is_8bit(message.body), utf8=tx.utf8)
        if not tx.pipelined:
            self._command(mail, Expect(Cmd.MAIL))
            return
        lines = [b"RSET", mail] if reset else [mail]
        expects = [Expect(Cmd.RSET), Expect(Cmd.MAIL)] if reset else [Expect(Cmd.MAIL)]
        for i in tx.sent:
            lines.append(rcpt_command(message.recipients[i], ext, utf8=tx.utf8))
            expects.append(Expect(Cmd.RCPT, i))
        if not tx.chunking:
            lines.append(b"DATA")
            expects.append(Expect(Cmd.DATA))
        self._command(b"\r\n".join(lines), *expects)

    def _mail(self, reply: Reply, expect: Expect) -> None:
        tx = self._tx
        assert tx is not None
        if reply.code // 100 != 2:
            tx.refused = reply_outcome(reply, expect.cmd.stage, self.peer)
            self._decide_rest(tx, tx.refused)
            if not tx.pipelined:
                self._finish(tx)
        elif not tx.pipelined:
            self._next_rcpt(tx, 0)

    def _next_rcpt(self, tx: Transaction, position: int) -> None:
        if position < len(tx.sent):
            index = tx.sent[position]
            recipient = tx.message.recipients[index]
            line = rcpt_command(recipient, self.extensions, utf8=tx.utf8)
            self._command(line, Expect(Cmd.RCPT, index))
        else:
            self._recipients_done(tx)

    def _rcpt(self, reply: Reply, expect: Expect) -> None:
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

    def _recipients_done(self, tx: Transaction) -> None:
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
            self._command(b"DATA", Expect(Cmd.DATA))

    def _data(self, reply: Reply, expect: Expect) -> None:
        tx = self._tx
        assert tx is not None
        live = bool(tx.accepted) and tx.refused is None
        if reply.code == 354:
            if live:
                self._expect.append(Expect(Cmd.DATA_END))
                self._send_body(tx, data_pieces(tx.message.body))
            else:  # a server that says 354 with no recipient: end the empty message
                tx.body_done = True
                self._command(b".", Expect(Cmd.DATA_END))
            return
        if live:
            if reply.code // 100 == 2:
                text = f"protocol error from {self.peer}: {reply.code} in reply to DATA"
                self._host_failed(temporary("4.5.0", text))
                return
            self._decide_rest(tx, reply_outcome(reply, expect.cmd.stage, self.peer))
        self._finish(tx)

    def _early(self, tx: Transaction) -> bool:
        """A reply to data not yet handed out: the server is out of step."""
        if tx.body_done:
            return False
        text = f"protocol error from {self.peer}: reply before the message data was sent"
        self._host_failed(temporary("4.5.0", text))
        return True

    def _data_end(self, reply: Reply, expect: Expect) -> None:
        tx = self._tx
        assert tx is not None
        if self._early(tx):
            return
        self._reset_by_server = True  # any reply to the end of data ends the transaction
        if tx.accepted and tx.refused is None:
            self._decide_rest(tx, reply_outcome(reply, expect.cmd.stage, self.peer))
        self._finish(tx)

    def _bdat(self, reply: Reply, expect: Expect) -> None:
        tx = self._tx
        assert tx is not None
        if (expect.last or not tx.pipelined) and self._early(tx):
            return
        if reply.code // 100 != 2 and tx.refused is None:
            tx.refused = reply_outcome(reply, expect.cmd.stage, self.peer)
        elif expect.last and tx.refused is None:
            self._reset_by_server = True
        if expect.last or (tx.refused is not None and not tx.pipelined):
            self._decide_rest(tx, tx.refused or reply_outcome(reply, expect.cmd.stage, self.peer))
            self._finish(tx)
        elif not tx.pipelined:
            self._send_chunk(tx)

    # ------------------------------------------------------------------ the body

    def _send_body(self, tx: Transaction, pieces: Iterator[bytes]) -> None:
        self._sending = True
        tx.body_done = False
        self._out.append(SendBody(self._pieces(tx, pieces)))

    def _pieces(self, tx: Transaction, pieces: Iterator[bytes]) -> Iterator[bytes]:
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

    def _all_chunks(self, tx: Transaction) -> Iterator[bytes]:
        assert tx.chunks is not None
        for chunk, last in tx.chunks:
            self._expect.append(Expect(Cmd.BDAT, last=last))
            yield chunk

    def _send_chunk(self, tx: Transaction) -> None:
        assert tx.chunks is not None
        chunk, last = next(tx.chunks)
        self._expect.append(Expect(Cmd.BDAT, last=last))
        self._send_body(tx, iter((chunk,)))

    # ------------------------------------------------------------------ results

    def _decide(self, tx: Transaction, index: int, outcome: Outcome) -> None:
        if index in tx.results:
            return
        result = RecipientResult(tx.message.recipients[index].address, outcome)
        tx.results[index] = result
        self._out.append(result)

    def _decide_rest(self, tx: Transaction, outcome: Outcome) -> None:
        for index in range(len(tx.message.recipients)):
            self._decide(tx, index, outcome)

    def _finish(self, tx: Transaction) -> None:
        if self._tx is not tx:
            return
        results = tuple(tx.results[i] for i in sorted(tx.results))
        self._out.append(TransactionResult(tx.message, results))
        self._tx = None
