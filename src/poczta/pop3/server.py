"""The sans-I/O POP3 server core: bytes in, events out (RFC 1939, 2449, 2595, 3206, 5034).

`Pop3Server` owns the protocol rules: line framing and limits, the AUTHORIZATION →
TRANSACTION → UPDATE states, USER/PASS and SASL AUTH, STLS, response codes, and
multi-line framing. It performs no I/O and never waits. A session drives it:

    core = Pop3Server(hostname="mail.example", tls_available=True, tls_active=False)
    write(core.start())
    events = core.receive(data)          # likewise core.eof()
    while events:
        event = events.pop(0)
        match event:
            case Reply() | MultiLine() | Continue(): write(event.encode())
            case StartTls(): upgrade(); events += core.tls_started()
            case CheckPassword(user, password): events += core.login_result(...)
            case NeedScram(authcid): events += core.scram_result(creds, user)
            case OpenMailbox(user): events += core.mailbox_opened(snapshot or MailboxError)
            case NeedMessage() | NeedTop(): events += core.message_data(octets or None)
            case CommitDeletions(uids): events += core.update_done(ok)
            case Close(): close()

Every question event is answered by exactly one method call, which returns the
events that follow (including replies to commands the client pipelined meanwhile).
Until then the core only buffers input, so the session should not read more while
a question is open. The session writes the "+OK" before StartTls, then upgrades;
the core drops whatever arrives until `tls_started()`. Input is framed into lines of at most
`Pop3Limits.max_line` octets; a longer line is discarded up to its LF without
buffering it, and answered with "-ERR". A dropped connection (`eof`) or an error
limit ends the session without committing deletions: only QUIT in TRANSACTION
reaches the UPDATE state.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from enum import Enum

from poczta.pop3.auth import AuthDone, AuthFailed, AuthStep, SaslLogin
from poczta.pop3.events import (
    LOGIN_UNAVAILABLE,
    CheckPassword,
    Close,
    CommitDeletions,
    Event,
    LoginResult,
    MailboxError,
    MaildropSnapshot,
    MultiLine,
    NeedMessage,
    NeedScram,
    NeedTop,
    OpenMailbox,
    Pop3Limits,
    Reply,
    StartTls,
)
from poczta.pop3.maildrop import Maildrop, Refusal
from poczta.pop3.wire import (
    multiline,
    plural,
    shown,
    split_command,
    stuff,
    top,
    words,
)
from poczta.sasl import MECHANISMS, ScramCredentials


class Pop3State(Enum):
    """RFC 1939 session states, plus CLOSED once the connection is to be dropped."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class Pop3UsageError(RuntimeError):
    """The session called an answer method the core did not ask for."""


class _Wait(Enum):
    LOGIN = "login_result"
    SCRAM = "scram_result"
    MAILBOX = "mailbox_opened"
    MESSAGE = "message_data"
    UPDATE = "update_done"
    TLS = "tls_started"


class _Overlong:
    """A line longer than the limit, already discarded."""


_OVERLONG = _Overlong()
_AUTHORIZATION_ONLY = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS"})
_TRANSACTION_ONLY = frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"})

Handler = Callable[[str], list[Event]]


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


class Pop3Server:
    """One POP3 connection's protocol state machine (see the module docstring)."""

    def __init__(
        self,
        *,
        hostname: str,
        tls_available: bool,
        tls_active: bool,
        plaintext_auth_allowed: bool = False,
        limits: Pop3Limits | None = None,
        implementation: str = "poczta",
        mechanisms: Sequence[str] = MECHANISMS,
    ) -> None:
        unknown = [m for m in mechanisms if m.upper() not in MECHANISMS]
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {', '.join(unknown)}")
        self.hostname = hostname
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.plaintext_auth_allowed = plaintext_auth_allowed
        self.limits = limits or Pop3Limits()
        self.implementation = implementation
        self.mechanisms = tuple(m.upper() for m in mechanisms)
        self.state = Pop3State.AUTHORIZATION
        self.user: str | None = None
        self._inbuf = bytearray()
        self._discarding = False
        self._wait: _Wait | None = None
        self._errors = 0
        self._auth_failures = 0
        self._pending_user: str | None = None
        self._sasl: SaslLogin | None = None
        self._maildrop: Maildrop | None = None
        self._fetch: tuple[int, int | None] = (0, None)
        self._handlers: dict[str, Handler] = {
            "USER": self._cmd_user,
            "PASS": self._cmd_pass,
            "APOP": self._cmd_apop,
            "AUTH": self._cmd_auth,
            "STLS": self._cmd_stls,
            "CAPA": self._cmd_capa,
            "QUIT": self._cmd_quit,
            "STAT": self._cmd_stat,
            "LIST": self._cmd_list,
            "UIDL": self._cmd_uidl,
            "RETR": self._cmd_retr,
            "TOP": self._cmd_top,
            "DELE": self._cmd_dele,
            "NOOP": self._cmd_noop,
            "RSET": self._cmd_rset,
        }

    # ----------------------------------------------------------------- public surface

    @property
    def auth_permitted(self) -> bool:
        """Whether USER/PASS and AUTH may be used on this connection now."""
        return self.tls_active or self.plaintext_auth_allowed

    @property
    def partial_line(self) -> bool:
        """True while part of a command (or SASL) line has arrived but not yet its end."""
        return self.state is not Pop3State.CLOSED and (bool(self._inbuf) or self._discarding)

    def start(self) -> list[Event]:
        """The greeting (no APOP timestamp: APOP is not offered)."""
        return [Reply(True, f"{self.hostname} POP3 server ready")]

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; returns the events they cause, in order."""
        if self.state is Pop3State.CLOSED or self._wait is _Wait.TLS:
            return []
        self._inbuf += data
        return self._run()

    def eof(self) -> list[Event]:
        """The client went away: close without entering UPDATE (nothing is deleted)."""
        if self.state is Pop3State.CLOSED:
            return []
        return self._close_with()

    def tls_started(self) -> list[Event]:
        """The TLS handshake after STLS completed; the session restarts unauthenticated."""
        if not self._expect(_Wait.TLS):
            return []
        self.tls_active = True
        return self._run()

    def login_result(self, result: LoginResult) -> list[Event]:
        """Answer a CheckPassword."""
        if not self._expect(_Wait.LOGIN):
            return []
        if self._sasl is not None:
            events = self._auth_step(self._sasl.password_checked(result.user), result)
        elif result.user is None:
            events = self._login_failed(result.code, result.text)
        else:
            events = self._open(result.user)
        return events + self._run()

    def scram_result(self, creds: ScramCredentials | None, user: str | None) -> list[Event]:
        """Answer a NeedScram: stored keys and canonical user, or None for unknown users."""
        if not self._expect(_Wait.SCRAM):
            return []
        assert self._sasl is not None
        return self._auth_step(self._sasl.scram_credentials(creds, user)) + self._run()

    def scram_unavailable(self) -> list[Event]:
        """Answer a NeedScram when the accounts could not be read (the store is down):
        ``-ERR [SYS/TEMP]``, not counted as a failed login."""
        if not self._expect(_Wait.SCRAM):
            return []
        self._sasl = None
        return self._login_failed("SYS/TEMP", LOGIN_UNAVAILABLE) + self._run()

    def mailbox_opened(self, result: MaildropSnapshot | MailboxError) -> list[Event]:
        """Answer an OpenMailbox: the locked snapshot, or why it could not be opened."""
        if not self._expect(_Wait.MAILBOX):
            return []
        user, self.user = self.user, None
        if isinstance(result, MailboxError):
            return [Reply(False, result.text, result.code), *self._run()]
        assert user is not None
        self.user = user
        self._maildrop = Maildrop(user, result)
        self.state = Pop3State.TRANSACTION
        return [Reply(True, f"Logged in, {self._maildrop.summary()}"), *self._run()]

    def message_data(self, data: bytes | None) -> list[Event]:
        """Answer a NeedMessage or NeedTop with the message octets (None: unreadable)."""
        if not self._expect(_Wait.MESSAGE):
            return []
        number, lines = self._fetch
        event: Event
        if data is None:
            event = Reply(False, f"Message {number} is not available now", "SYS/TEMP")
        elif lines is None:
            event = MultiLine(Reply(True, f"{self._drop().size(number)} octets"), stuff(data))
        else:
            event = MultiLine(Reply(True, "Top of message follows"), stuff(top(data, lines)))
        return [event, *self._run()]

    def update_done(self, ok: bool) -> list[Event]:
        """Answer a CommitDeletions: whether every marked message was removed."""
        if not self._expect(_Wait.UPDATE):
            return []
        if not ok:
            return self._close_with(
                Reply(False, "Some deleted messages were not removed", "SYS/TEMP")
            )
        return self._close_with(self._signing_off())

    def _signing_off(self) -> Reply:
        left = plural(self._drop().count, "message")
        return Reply(True, f"{self.hostname} POP3 server signing off ({left} left)")

    # ----------------------------------------------------------------- framing

    def _expect(self, wait: _Wait) -> bool:
        if self.state is Pop3State.CLOSED:
            return False
        if self._wait is not wait:
            asked = self._wait.value if self._wait else "nothing"
            raise Pop3UsageError(f"{wait.value}() called, but the core asked for {asked}")
        self._wait = None
        return True

    def _run(self) -> list[Event]:
        events: list[Event] = []
        while self._wait is None and self.state is not Pop3State.CLOSED:
            line = self._next_line()
            if line is None:
                break
            if self._sasl is not None and self._sasl.reading:
                events += self._auth_line(line)
            elif isinstance(line, _Overlong):
                events += self._error("Line too long")
            else:
                events += self._command(line)
        return events

    def _limit_for(self, buf: bytearray) -> int:
        if (self._sasl is not None and self._sasl.reading) or buf[:5].upper() == b"AUTH ":
            return self.limits.max_auth_line
        return self.limits.max_line

    def _next_line(self) -> bytes | _Overlong | None:
        buf = self._inbuf
        end = buf.find(b"\n")
        if self._discarding:
            if end < 0:
                buf.clear()
                return None
            del buf[: end + 1]
            self._discarding = False
            return _OVERLONG
        if end < 0:
            if len(buf) >= self._limit_for(buf):
                buf.clear()
                self._discarding = True
            return None
        if end + 1 > self._limit_for(buf):
            del buf[: end + 1]
            return _OVERLONG
        line = bytes(buf[:end])
        del buf[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _close_with(self, *events: Event) -> list[Event]:
        self.state = Pop3State.CLOSED
        self._wait = None
        self._inbuf.clear()
        return [*events, Close()]

    def _error(self, text: str, code: str | None = None) -> list[Event]:
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            return self._close_with(Reply(False, f"{text}; too many errors, closing", code))
        return [Reply(False, text, code)]

    def _drop(self) -> Maildrop:
        assert self._maildrop is not None
        return self._maildrop

    # ----------------------------------------------------------------- commands

    def _command(self, line: bytes) -> list[Event]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error("Command line is not valid UTF-8")
        keyword, rest = split_command(text)
        if keyword != "PASS":
            self._pending_user = None
        handler = self._handlers.get(keyword)
        if handler is None:
            if not keyword:
                return self._error("Empty command")
            return self._error(f"Unknown command {shown(keyword)[:16]}".rstrip())
        if self.state is Pop3State.AUTHORIZATION and keyword in _TRANSACTION_ONLY:
            return self._error(f"{keyword} is not valid before login")
        if self.state is Pop3State.TRANSACTION and keyword in _AUTHORIZATION_ONLY:
            return self._error(f"{keyword} is not valid after login")
        return handler(rest)

    def _no_args(self, keyword: str, rest: str) -> list[Event] | None:
        if words(rest):
            return self._error(f"{keyword} takes no arguments")
        return None

    def _auth_refusal(self) -> list[Event] | None:
        if self.auth_permitted:
            return None
        if self.tls_available:
            return self._error("Plaintext authentication is disabled: issue STLS first", "AUTH")
        return self._error("Authentication is not available on this connection", "AUTH")

    def _cmd_user(self, rest: str) -> list[Event]:
        refused = self._auth_refusal()
        if refused is not None:
            return refused
        name = _nfkc(rest.strip())
        if not name:
            return self._error("USER needs a name")
        self._pending_user = name
        return [Reply(True, "Send PASS")]

    def _cmd_pass(self, rest: str) -> list[Event]:
        refused = self._auth_refusal()
        if refused is not None:
            return refused
        name, self._pending_user = self._pending_user, None
        if name is None:
            return self._error("Send USER first")
        if not rest:
            return self._error("PASS needs a password")
        self._wait = _Wait.LOGIN
        return [CheckPassword(name, _nfkc(rest))]

    def _cmd_apop(self, rest: str) -> list[Event]:
        return self._error("APOP is not supported")

    def _cmd_stls(self, rest: str) -> list[Event]:
        bad = self._no_args("STLS", rest)
        if bad is not None:
            return bad
        if self.tls_active:
            return self._error("TLS is already active")
        if not self.tls_available:
            return self._error("TLS is not available")
        self._wait = _Wait.TLS
        self._inbuf.clear()
        self._discarding = False
        return [Reply(True, "Begin TLS negotiation"), StartTls()]

    def _cmd_capa(self, rest: str) -> list[Event]:
        bad = self._no_args("CAPA", rest)
        if bad is not None:
            return bad
        lines: list[str] = []
        if self.state is Pop3State.AUTHORIZATION:
            if self.auth_permitted:
                lines.append("USER")
                if self.mechanisms:
                    lines.append("SASL " + " ".join(self.mechanisms))
            if self.tls_available and not self.tls_active:
                lines.append("STLS")
        lines += ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        lines.append(f"IMPLEMENTATION {self.implementation}")
        return [multiline(Reply(True, "Capability list follows"), lines)]

    def _cmd_quit(self, rest: str) -> list[Event]:
        bad = self._no_args("QUIT", rest)
        if bad is not None:
            return bad
        if self.state is not Pop3State.TRANSACTION:
            return self._close_with(Reply(True, f"{self.hostname} POP3 server signing off"))
        self.state = Pop3State.UPDATE
        uids = self._drop().deleted_uids()
        if not uids:
            return self._close_with(self._signing_off())
        self._wait = _Wait.UPDATE
        return [CommitDeletions(uids)]

    def _answer(self, result: Reply | MultiLine | Refusal) -> list[Event]:
        if isinstance(result, Refusal):
            return self._error(result.text)
        return [result]

    def _cmd_stat(self, rest: str) -> list[Event]:
        return self._no_args("STAT", rest) or [self._drop().stat()]

    def _cmd_noop(self, rest: str) -> list[Event]:
        return self._no_args("NOOP", rest) or [Reply(True, "")]

    def _cmd_rset(self, rest: str) -> list[Event]:
        return self._no_args("RSET", rest) or [self._drop().reset()]

    def _cmd_list(self, rest: str) -> list[Event]:
        return self._answer(self._drop().list(rest))

    def _cmd_uidl(self, rest: str) -> list[Event]:
        return self._answer(self._drop().uidl(rest))

    def _cmd_dele(self, rest: str) -> list[Event]:
        return self._answer(self._drop().delete(rest))

    def _cmd_retr(self, rest: str) -> list[Event]:
        number = self._drop().target("RETR", rest)
        if isinstance(number, Refusal):
            return self._error(number.text)
        self._wait = _Wait.MESSAGE
        self._fetch = (number, None)
        return [NeedMessage(number, self._drop().uid(number))]

    def _cmd_top(self, rest: str) -> list[Event]:
        target = self._drop().top_target(rest)
        if isinstance(target, Refusal):
            return self._error(target.text)
        number, lines = target
        self._wait = _Wait.MESSAGE
        self._fetch = (number, lines)
        return [NeedTop(number, self._drop().uid(number), lines)]

    # ----------------------------------------------------------------- login and SASL

    def _open(self, user: str) -> list[Event]:
        self.user = user
        self._wait = _Wait.MAILBOX
        return [OpenMailbox(user)]

    def _login_failed(self, code: str, text: str) -> list[Event]:
        reply = Reply(False, text, code)
        if code == "AUTH":
            self._auth_failures += 1
            if self._auth_failures >= self.limits.max_auth_failures:
                return self._close_with(reply)
        return [reply]

    def _cmd_auth(self, rest: str) -> list[Event]:
        refused = self._auth_refusal()
        if refused is not None:
            return refused
        args = words(rest)
        if not args:
            first = Reply(True, "Supported mechanisms follow")
            return [multiline(first, self.mechanisms)]
        if len(args) > 2:
            return self._error("AUTH takes a mechanism and an optional initial response")
        if args[0].upper() not in self.mechanisms:
            return self._error("Unsupported authentication mechanism")
        self._sasl, step = SaslLogin.begin(args[0], args[1] if len(args) == 2 else None)
        return self._auth_step(step)

    def _auth_line(self, line: bytes | _Overlong) -> list[Event]:
        assert self._sasl is not None
        if isinstance(line, _Overlong):
            self._sasl = None
            return self._error("Authentication response too long")
        return self._auth_step(self._sasl.line(line))

    def _auth_step(self, step: AuthStep, login: LoginResult | None = None) -> list[Event]:
        if isinstance(step, CheckPassword):
            self._wait = _Wait.LOGIN
        elif isinstance(step, NeedScram):
            self._wait = _Wait.SCRAM
        elif isinstance(step, AuthDone):
            self._sasl = None
            return self._open(step.user)
        elif isinstance(step, AuthFailed):
            self._sasl = None
            if step.malformed:
                return self._error(step.text)
            if login is not None and login.user is None:
                return self._login_failed(login.code, login.text)
            return self._login_failed("AUTH", step.text)
        return [step]
