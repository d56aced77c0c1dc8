"""The sans-I/O SMTP server state machine (RFC 5321 with ESMTP extensions): bytes in, events out.

`SmtpServer` never awaits and never touches sockets, TLS, the store or settings
files. The session layer feeds it bytes with `receive`, acts on the events it
returns, and hands answers to its questions back through `answer`,
`answer_auth_password` and `answer_auth_scram`, which return further events.
While a question is pending, received bytes are only buffered; they are handled,
in order, once the answer arrives (pipelining, RFC 2920). At most one question
is pending at a time.

Extensions: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING
(BDAT), DSN parameters, STARTTLS (RFC 3207: bytes pipelined after the command are
dropped and the session state is reset once TLS is up) and AUTH (RFC 4954, only on
the submission roles and only over TLS unless plaintext authentication is allowed).
The mail transaction (envelope, limits, body readers) is `poczta.smtp.transaction`,
body intake (bare CR and LF included) `poczta.smtp.body`. Command lines end at LF
with an optional CR before it; a CR elsewhere, like any control character, is refused
wherever an argument allows no such thing (the EHLO name, paths, parameters), so none
reaches a header or a log line.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar

from poczta import sasl
from poczta.message.header import HeaderLimitExceeded, split_header
from poczta.smtp import replies as R
from poczta.smtp.auth import AuthDialogue, AuthOutcome, AuthStep
from poczta.smtp.body import BareLineEndings
from poczta.smtp.events import (
    Accept,
    Answer,
    AuthFailed,
    AuthPassword,
    AuthScram,
    AuthSucceeded,
    CheckRecipient,
    CheckSender,
    Close,
    Envelope,
    Event,
    MessageReceived,
    Recipient,
    Reject,
    Role,
    SmtpLimits,
    StartTls,
    TlsDetails,
    TlsInfo,
)
from poczta.smtp.replies import Reply
from poczta.smtp.syntax import MailParams, RcptParams, parse_helo
from poczta.smtp.transaction import ClientError, MailTransaction

__all__ = [
    "Accept",
    "Answer",
    "AuthFailed",
    "AuthPassword",
    "AuthScram",
    "AuthSucceeded",
    "CheckRecipient",
    "CheckSender",
    "Close",
    "Envelope",
    "Event",
    "MailParams",
    "MessageReceived",
    "RcptParams",
    "Recipient",
    "Reject",
    "Reply",
    "Role",
    "SmtpLimits",
    "SmtpServer",
    "SmtpStateError",
    "StartTls",
    "TlsDetails",
    "TlsInfo",
]


class SmtpStateError(RuntimeError):
    """The session answered a question that was not asked (a programming error)."""


class _Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    TLS_WAIT = "tls-wait"
    CLOSED = "closed"


class _Question(enum.Enum):
    SENDER = "sender"
    RECIPIENT = "recipient"
    MESSAGE = "message"
    AUTH = "auth"


class SmtpServer:
    """One SMTP server session as a state machine."""

    def __init__(
        self,
        *,
        hostname: str,
        role: Role,
        limits: SmtpLimits | None = None,
        tls_available: bool = False,
        tls_active: bool = False,
        plaintext_auth_allowed: bool = False,
        client_ip: str = "",
        greeting_note: str = "",
        bare_line_endings: BareLineEndings = "normalize",
        tls_info: TlsDetails | None = None,
        sasl_nonce: Callable[[], str] | None = None,
    ) -> None:
        self.hostname = hostname
        self.role = role
        self.limits = limits or SmtpLimits()
        self.client_ip = client_ip
        self._tls_available = tls_available
        self._tls_active = tls_active or role is Role.SUBMISSIONS
        self._tls: TlsDetails | None = tls_info
        self._plaintext_auth = plaintext_auth_allowed
        self._greeting_note = greeting_note
        self._sasl_nonce = sasl_nonce
        self._buf = bytearray()
        self._out: list[Event] = []
        self._mode = _Mode.COMMAND
        self._discarding = False
        self._eof = False
        self._question: _Question | None = None
        self._errors = 0
        self._commands = 0
        self._auth_failures = 0
        self._user: str | None = None
        self._dialogue: AuthDialogue | None = None
        self._helo: str | None = None
        self._esmtp = False
        self._tx = MailTransaction(self.limits, bare_line_endings)

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """True once the core has emitted Close."""
        return self._mode is _Mode.CLOSED

    @property
    def authenticated_user(self) -> str | None:
        """The authenticated user, if any."""
        return self._user

    @property
    def helo(self) -> str | None:
        """The name the client gave in EHLO/HELO, once it has."""
        return self._helo

    @property
    def in_data(self) -> bool:
        """True while a message body (DATA or a BDAT chunk) is being received."""
        return self._mode in (_Mode.DATA, _Mode.BDAT)

    @property
    def partial_line(self) -> bool:
        """True while part of a command (or AUTH) line has arrived but not yet its end."""
        return self._mode in (_Mode.COMMAND, _Mode.AUTH) and (bool(self._buf) or self._discarding)

    def start(self) -> list[Event]:
        """The greeting."""
        note = f" {self._greeting_note}" if self._greeting_note else ""
        return [Reply(220, None, f"{self.hostname} ESMTP ready{note}")]

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; returns the events they cause."""
        if self._mode in (_Mode.CLOSED, _Mode.TLS_WAIT) or self._eof:
            return []
        if self._mode is _Mode.DATA and self._question is None and not self._buf:
            self._feed_data(data)
        else:
            self._buf += data
        return self._run()

    def eof(self) -> list[Event]:
        """The client closed its side. A message cut short mid-DATA is dropped."""
        if self._mode is _Mode.CLOSED:
            return []
        self._eof = True
        if self._question is not None:
            return []  # closed after the pending answer's reply
        self._close()
        return self._flush()

    def tls_started(self, info: TlsDetails) -> list[Event]:
        """TLS is up (after StartTls, or implicit TLS): forget the dialogue so far.

        RFC 3207: after STARTTLS the client must EHLO again.
        """
        if self._mode is _Mode.CLOSED:
            return []
        self._tls_active = True
        self._tls = info
        self._helo = None
        self._esmtp = False
        self._tx.reset()
        self._mode = _Mode.COMMAND
        return []

    def answer(self, answer: Answer) -> list[Event]:
        """Answer CheckSender, CheckRecipient or MessageReceived."""
        question = self._take_question()
        if question is _Question.SENDER:
            self._emit(self._tx.sender_answered(answer))
        elif question is _Question.RECIPIENT:
            self._emit(self._tx.recipient_answered(answer))
        elif question is _Question.MESSAGE:
            self._emit(self._tx.message_answered(answer))
        else:
            raise SmtpStateError("an AUTH question needs answer_auth_password/answer_auth_scram")
        return self._run()

    def answer_auth_password(self, user: str | None) -> list[Event]:
        """Answer AuthPassword: the canonical user, or None if the password is wrong."""
        self._auth_step(self._take_auth_question().password_checked(user))
        return self._run()

    def answer_auth_scram(
        self, creds: sasl.ScramCredentials | None, user: str | None
    ) -> list[Event]:
        """Answer AuthScram: stored keys and canonical user, or None for an unknown user."""
        self._auth_step(self._take_auth_question().scram_credentials(creds, user))
        return self._run()

    def answer_auth_unavailable(self) -> list[Event]:
        """Answer AuthPassword or AuthScram when the accounts could not be read (the store
        is unavailable): 454 4.7.0 (RFC 4954), not counted as a failed login."""
        self._take_auth_question()
        self._auth_step(AuthStep((R.AUTH_TEMPORARY,), AuthOutcome.ERROR))
        return self._run()

    # ------------------------------------------------------------------ plumbing

    def _take_question(self) -> _Question:
        question = self._question
        if question is None:
            raise SmtpStateError("no question is pending")
        self._question = None
        return question

    def _take_auth_question(self) -> AuthDialogue:
        if self._question is not _Question.AUTH or self._dialogue is None:
            raise SmtpStateError("no AUTH question is pending")
        self._question = None
        return self._dialogue

    def _emit(self, event: Event) -> None:
        self._out.append(event)

    def _ask(self, question: _Question, event: Event) -> None:
        self._question = question
        self._out.append(event)

    def _flush(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _close(self) -> None:
        self._emit(Close())
        self._mode = _Mode.CLOSED
        self._buf.clear()

    def _error(self, reply: Reply) -> None:
        """A client error: reply, and close once there have been too many."""
        self._emit(reply)
        self._errors += 1
        if self._errors >= self.limits.max_errors and self._mode is not _Mode.CLOSED:
            self._emit(R.TOO_MANY_ERRORS)
            self._close()

    def _refuse(self, refusal: Reply | ClientError) -> None:
        """A transaction refusal: client errors count towards the error limit."""
        if isinstance(refusal, ClientError):
            self._error(refusal.reply)
        else:
            self._emit(refusal)

    def _run(self) -> list[Event]:
        """Handle buffered input until it runs out or a question is pending."""
        while self._question is None:
            mode = self._mode
            if mode is _Mode.DATA:
                if not self._buf:
                    break
                data = bytes(self._buf)
                self._buf.clear()
                self._feed_data(data)
            elif mode is _Mode.BDAT:
                result = self._tx.feed_chunk(self._buf)
                if result is None:
                    break
                self._mode = _Mode.COMMAND
                self._received(result)
            elif mode in (_Mode.COMMAND, _Mode.AUTH):
                line = self._next_line()
                if line is None:
                    break
                if self._mode is _Mode.AUTH:
                    self._auth_line(line)
                else:
                    self._command(line)
            else:
                break
        if self._eof and self._question is None and self._mode is not _Mode.CLOSED:
            self._close()
        return self._flush()

    def _next_line(self) -> bytes | None:
        """The next complete input line without its line ending, or None."""
        buf, limit = self._buf, self.limits.max_command_line
        while True:
            lf = buf.find(b"\n")
            if self._discarding:
                if lf < 0:
                    buf.clear()
                    return None
                del buf[: lf + 1]
                self._discarding = False
                continue
            if lf < 0 and len(buf) <= limit:
                return None
            if lf < 0 or lf + 1 > limit:
                self._discarding = True
                self._line_too_long()
                if self._mode is _Mode.CLOSED:
                    return None
                continue
            line = bytes(buf[:lf])
            del buf[: lf + 1]
            return line[:-1] if line.endswith(b"\r") else line

    def _line_too_long(self) -> None:
        if self._mode is _Mode.AUTH:
            self._dialogue = None
            self._mode = _Mode.COMMAND
        self._error(R.LINE_TOO_LONG)

    # ------------------------------------------------------------------ commands

    def _command(self, raw: bytes) -> None:
        self._commands += 1
        if self._commands > self.limits.max_commands:
            self._emit(R.TOO_MANY_COMMANDS)
            self._close()
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(R.BAD_UTF8)
            return
        verb, _, arg = line.partition(" ")
        handler = self._handlers.get(verb.upper())
        if handler is None:
            self._error(R.UNKNOWN_COMMAND)
        else:
            handler(self, arg.strip(" "))

    def _ehlo(self, arg: str) -> None:
        self._greet(arg, esmtp=True)

    def _helo_cmd(self, arg: str) -> None:
        self._greet(arg, esmtp=False)

    def _greet(self, arg: str, *, esmtp: bool) -> None:
        """EHLO/HELO; a refused name leaves the session as it was (RFC 5321 4.1.4)."""
        verb = "EHLO" if esmtp else "HELO"
        if not arg:
            self._error(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
            return
        name = parse_helo(arg)
        if name is None:
            self._error(Reply(501, "5.5.4", f"Invalid hostname in {verb}"))
            return
        self._helo, self._esmtp = name, esmtp
        self._tx.reset()
        if not esmtp:
            self._emit(Reply(250, None, self.hostname))
            return
        keywords = [
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
        if self._tls_available and not self._tls_active:
            keywords.append("STARTTLS")
        if self._auth_allowed():
            keywords.append("AUTH " + " ".join(sasl.MECHANISMS))
        self._emit(Reply(250, None, self.hostname, tuple(keywords)))

    def _auth_allowed(self) -> bool:
        return self.role is not Role.MX and (self._tls_active or self._plaintext_auth)

    # ------------------------------------------------------------------ the mail transaction

    def _mail(self, arg: str) -> None:
        if self._helo is None:
            self._error(R.NEED_HELO)
        elif self.role is not Role.MX and self._user is None:
            self._error(R.AUTH_REQUIRED)
        else:
            result = self._tx.mail(arg, esmtp=self._esmtp)
            if isinstance(result, CheckSender):
                self._ask(_Question.SENDER, result)
            else:
                self._refuse(result)

    def _rcpt(self, arg: str) -> None:
        result = self._tx.rcpt(arg, esmtp=self._esmtp)
        if isinstance(result, CheckRecipient):
            self._ask(_Question.RECIPIENT, result)
        else:
            self._refuse(result)

    def _data(self, arg: str) -> None:
        refusal = self._tx.data(arg)
        if refusal is not None:
            self._refuse(refusal)
        else:
            self._mode = _Mode.DATA
            self._emit(R.START_DATA)

    def _feed_data(self, data: bytes) -> None:
        reader = self._tx.dot
        assert reader is not None
        leftover = reader.feed(data)
        if leftover is None:
            return
        self._buf[:0] = leftover
        self._mode = _Mode.COMMAND
        self._received(self._tx.data_ended())

    def _bdat(self, arg: str) -> None:
        refusal = self._tx.bdat(arg)
        if refusal is not None:
            self._refuse(refusal)
        else:
            self._mode = _Mode.BDAT

    def _received(self, result: bytes | Reply | ClientError) -> None:
        """Body intake ended: ask the session to store the message, or refuse it."""
        if not isinstance(result, bytes):
            self._refuse(result)
            return
        limits = self.limits
        try:
            header = split_header(
                result, max_size=limits.max_header_size, max_fields=limits.max_header_fields
            )
        except HeaderLimitExceeded as exc:
            self._tx.reset()
            self._refuse(R.HEADER_TOO_BIG if exc.what == "size" else R.TOO_MANY_HEADER_FIELDS)
            return
        envelope = self._tx.envelope(
            helo=self._helo,
            esmtp=self._esmtp,
            user=self._user,
            tls=self._tls,
            tls_active=self._tls_active,
            client_ip=self.client_ip,
        )
        self._ask(_Question.MESSAGE, MessageReceived(envelope, result, header))

    # ------------------------------------------------------------------ other commands

    def _rset(self, arg: str) -> None:
        if arg:
            self._error(R.NO_ARGUMENTS)
            return
        self._tx.reset()
        self._emit(R.OK)

    def _noop(self, arg: str) -> None:
        self._emit(R.OK)

    def _quit(self, arg: str) -> None:
        self._emit(R.BYE)
        self._close()

    def _vrfy(self, arg: str) -> None:
        if not arg:
            self._error(Reply(501, "5.5.4", "Syntax: VRFY address"))
            return
        self._emit(
            Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
        )

    def _expn(self, arg: str) -> None:
        self._emit(Reply(502, "5.5.1", "EXPN not available"))

    def _help(self, arg: str) -> None:
        self._emit(Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT"))

    def _starttls(self, arg: str) -> None:
        if arg:
            self._error(R.NO_ARGUMENTS)
        elif not self._tls_available or self._tls_active:
            self._error(Reply(503, "5.5.1", "STARTTLS not available"))
        elif self._user is not None:
            self._error(R.BAD_SEQUENCE)
        else:
            self._emit(R.TLS_READY)
            self._buf.clear()  # RFC 3207: nothing pipelined after STARTTLS survives
            self._mode = _Mode.TLS_WAIT
            self._emit(StartTls())

    # ------------------------------------------------------------------ AUTH

    def _auth(self, arg: str) -> None:
        refusal = self._auth_refusal()
        if refusal is not None:
            self._error(refusal)
            return
        dialogue = AuthDialogue.begin(arg, self._sasl_nonce)
        if isinstance(dialogue, AuthStep):
            self._auth_step(dialogue)
            return
        self._dialogue = dialogue
        self._auth_step(dialogue.start())

    def _auth_refusal(self) -> Reply | None:
        if self.role is Role.MX:
            return Reply(502, "5.5.1", "AUTH not available")
        if self._helo is None or not self._esmtp:
            return Reply(503, "5.5.1", "Send EHLO first")
        if not self._auth_allowed():
            return R.NEED_STARTTLS
        if self._user is not None:
            return Reply(503, "5.5.1", "Already authenticated")
        if self._tx.mail_from is not None:
            return Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
        return None

    def _auth_line(self, line: bytes) -> None:
        assert self._dialogue is not None
        self._auth_step(self._dialogue.line(line))

    def _auth_step(self, step: AuthStep) -> None:
        outcome = step.outcome
        if outcome is AuthOutcome.CHALLENGE:
            self._mode = _Mode.AUTH
            self._out.extend(step.events)
            return
        if outcome is AuthOutcome.QUESTION:
            self._question = _Question.AUTH
            self._out.extend(step.events)
            return
        dialogue, self._dialogue = self._dialogue, None
        self._mode = _Mode.COMMAND
        if outcome is AuthOutcome.ERROR:
            for event in step.events:
                assert isinstance(event, Reply)
                self._error(event)
            return
        self._out.extend(step.events)
        if outcome is AuthOutcome.SUCCESS:
            assert dialogue is not None
            self._user = dialogue.user
            return
        self._auth_failures += 1
        if self._auth_failures >= self.limits.max_auth_failures:
            self._emit(R.TOO_MANY_AUTH_FAILURES)
            self._close()

    _handlers: ClassVar[dict[str, Callable[[SmtpServer, str], None]]] = {
        "EHLO": _ehlo,
        "HELO": _helo_cmd,
        "MAIL": _mail,
        "RCPT": _rcpt,
        "DATA": _data,
        "BDAT": _bdat,
        "RSET": _rset,
        "NOOP": _noop,
        "QUIT": _quit,
        "VRFY": _vrfy,
        "EXPN": _expn,
        "HELP": _help,
        "STARTTLS": _starttls,
        "AUTH": _auth,
    }
