"""One SMTP mail transaction (RFC 5321 section 3.3): MAIL, RCPT, then the body by DATA or BDAT.

`MailTransaction` holds the envelope being built (the reverse-path, its
parameters and the accepted recipients), applies the recipient and message size
limits, opens the body reader for DATA (`dot`) or BDAT (`chunks`, RFC 3030) and
decides the reply to each transaction command and to the session's answers.

It keeps no session facts and emits nothing itself. The server state machine
owns line framing, modes, error counting and the questions to the session; it
feeds DATA bytes straight into `dot` and hands BDAT bytes to `feed_chunk`. Results are
values: a `Reply` is sent as it is, a `ClientError` is a syntax or sequence error
that also counts towards the error limit, `CheckSender` and `CheckRecipient` are
questions for the session, and `bytes` is a complete message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from poczta.smtp import replies as R
from poczta.smtp.body import BareLineEndings, ChunkReader, DotReader
from poczta.smtp.events import (
    Answer,
    CheckRecipient,
    CheckSender,
    Envelope,
    Recipient,
    Reject,
    SmtpLimits,
    TlsDetails,
    protocol_name,
)
from poczta.smtp.replies import Reply
from poczta.smtp.syntax import MailParams, RcptParams, parse_mail_from, parse_rcpt_to

_BDAT_ARG = re.compile(r"([0-9]{1,18})(?: +(LAST))?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ClientError:
    """A refusal that counts towards `SmtpLimits.max_errors`: a syntax or sequence error."""

    reply: Reply


_NEED_MAIL = ClientError(R.NEED_MAIL)
_NESTED_MAIL = ClientError(R.NESTED_MAIL)
_NO_ARGUMENTS = ClientError(R.NO_ARGUMENTS)
_BAD_SEQUENCE = ClientError(R.BAD_SEQUENCE)
_NO_RECIPIENTS = ClientError(R.NO_RECIPIENTS)
_BDAT_SYNTAX = ClientError(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))


def _param_refusal(reply: Reply) -> Reply | ClientError:
    """A MAIL or RCPT argument refused: a policy limit is not a client syntax error."""
    return reply if reply.code in (552, 553) else ClientError(reply)


def _rejected(answer: Reject) -> Reply:
    return Reply(answer.code, answer.enhanced, answer.text)


class MailTransaction:
    """The envelope and body of the message being received; `reset` starts over."""

    __slots__ = (
        "_bare",
        "_chunk_bad",
        "_chunk_last",
        "_limits",
        "_pending_rcpt",
        "_pending_sender",
        "chunks",
        "dot",
        "mail_from",
        "mail_params",
        "recipients",
    )

    mail_from: str | None
    mail_params: MailParams
    recipients: list[Recipient]
    dot: DotReader | None
    chunks: ChunkReader | None
    _pending_sender: tuple[str, MailParams] | None
    _pending_rcpt: tuple[str, RcptParams] | None
    _chunk_last: bool
    _chunk_bad: Reply | None

    def __init__(self, limits: SmtpLimits, bare_line_endings: BareLineEndings) -> None:
        self._limits = limits
        self._bare: BareLineEndings = bare_line_endings
        self.reset()

    def reset(self) -> None:
        """Forget the envelope and any body (RSET, HELO/EHLO, STARTTLS, end of message)."""
        self.mail_from = None
        self.mail_params = MailParams()
        self.recipients = []
        self._pending_sender = None
        self._pending_rcpt = None
        self.dot = None
        self.chunks = None
        self._chunk_last = False
        self._chunk_bad = None

    # ------------------------------------------------------------------ envelope

    def mail(self, arg: str, *, esmtp: bool) -> CheckSender | Reply | ClientError:
        """MAIL FROM: the question about the reverse-path, or the refusal."""
        if self.mail_from is not None:
            return _NESTED_MAIL
        parsed = parse_mail_from(arg, esmtp=esmtp, max_size=self._limits.max_message_size)
        if isinstance(parsed, Reply):
            return _param_refusal(parsed)
        self._pending_sender = parsed
        return CheckSender(*parsed)

    def sender_answered(self, answer: Answer) -> Reply:
        """The session's answer to CheckSender: the transaction starts unless rejected."""
        assert self._pending_sender is not None
        address, params = self._pending_sender
        self._pending_sender = None
        if isinstance(answer, Reject):
            return _rejected(answer)
        self.mail_from, self.mail_params = address, params
        return Reply(250, "2.1.0", answer.text or f"Sender <{address}> OK")

    def rcpt(self, arg: str, *, esmtp: bool) -> CheckRecipient | Reply | ClientError:
        """RCPT TO: the question about the forward-path, or the refusal."""
        if self.mail_from is None:
            return _NEED_MAIL
        if len(self.recipients) >= self._limits.max_recipients:
            return R.TOO_MANY_RECIPIENTS
        parsed = parse_rcpt_to(arg, esmtp=esmtp, smtputf8=self.mail_params.smtputf8)
        if isinstance(parsed, Reply):
            return _param_refusal(parsed)
        self._pending_rcpt = parsed
        return CheckRecipient(*parsed)

    def recipient_answered(self, answer: Answer) -> Reply:
        """The session's answer to CheckRecipient: the recipient is added unless rejected."""
        assert self._pending_rcpt is not None
        address, params = self._pending_rcpt
        self._pending_rcpt = None
        if isinstance(answer, Reject):
            return _rejected(answer)
        self.recipients.append(Recipient(address, params))
        return Reply(250, "2.1.5", answer.text or f"Recipient <{address}> OK")

    # ------------------------------------------------------------------ body

    def data(self, arg: str) -> ClientError | None:
        """DATA: None once `dot` is open for the content, or the error."""
        if arg:
            return _NO_ARGUMENTS
        if self.mail_from is None:
            return _NEED_MAIL
        if self.chunks is not None:
            return _BAD_SEQUENCE
        if not self.recipients:
            return _NO_RECIPIENTS
        limits = self._limits
        self.dot = DotReader(limits.max_message_size, limits.max_data_line)
        return None

    def data_ended(self) -> bytes | Reply:
        """`dot` saw the end marker: the message, or the refusal that ends the transaction."""
        reader = self.dot
        assert reader is not None
        return self._finish(reader.result(self._bare, self._limits.max_message_size))

    def bdat(self, arg: str) -> ClientError | None:
        """BDAT size [LAST]: None once `chunks` expects the chunk, or the syntax error.

        A BDAT out of sequence still has its chunk read (and thrown away) before
        the error is replied, since the client sends the bytes regardless.
        """
        m = _BDAT_ARG.fullmatch(arg)
        if m is None:
            return _BDAT_SYNTAX
        chunks = self.chunks
        if chunks is None:
            limits = self._limits
            chunks = self.chunks = ChunkReader(limits.max_message_size, limits.max_data_line)
            if self.mail_from is None:
                self._chunk_bad = R.NEED_MAIL
            elif not self.recipients:
                self._chunk_bad = R.NO_RECIPIENTS
            if self._chunk_bad is not None:
                chunks.refuse()
        chunks.expect(int(m.group(1)))
        self._chunk_last = m.group(2) is not None
        return None

    def feed_chunk(self, buf: bytearray) -> bytes | Reply | ClientError | None:
        """Move the announced chunk's bytes out of `buf`; None until the chunk is complete.

        Then: the message after LAST, a progress reply, or the refusal.
        """
        reader = self.chunks
        assert reader is not None
        if reader.remaining:
            if not buf:
                return None
            data = bytes(buf)
            buf[:] = reader.feed(data)
            if reader.remaining:
                return None
        bad = self._chunk_bad
        if bad is not None:
            self.reset()
            return ClientError(bad)
        if self._chunk_last:
            return self._finish(reader.result(self._bare))
        return Reply(250, "2.0.0", f"{reader.size} octets received")

    def _finish(self, result: bytes | Reply) -> bytes | Reply:
        if isinstance(result, Reply):
            self.reset()
        return result

    def envelope(
        self,
        *,
        helo: str | None,
        esmtp: bool,
        user: str | None,
        tls: TlsDetails | None,
        tls_active: bool,
        client_ip: str,
    ) -> Envelope:
        """The complete envelope: this transaction plus the session facts passed in."""
        mail_from = self.mail_from
        assert helo is not None and mail_from is not None
        protocol = protocol_name(
            esmtp=esmtp,
            smtputf8=self.mail_params.smtputf8,
            tls=tls_active,
            authenticated=user is not None,
        )
        return Envelope(
            helo=helo,
            esmtp=esmtp,
            mail_from=mail_from,
            mail_params=self.mail_params,
            recipients=tuple(self.recipients),
            user=user,
            tls=tls,
            client_ip=client_ip,
            protocol=protocol,
        )

    def message_answered(self, answer: Answer) -> Reply:
        """The session's answer to MessageReceived; the transaction is over either way."""
        self.reset()
        if isinstance(answer, Reject):
            return _rejected(answer)
        return Reply(250, "2.0.0", answer.text or "OK: message accepted")
