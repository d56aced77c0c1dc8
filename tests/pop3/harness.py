"""Transcript runner for the POP3 core: a scripted fake session around `Pop3Server`.

A transcript is a text file of lines, read top to bottom:

    # comment                      ignored, as are blank lines
    @ tls_active no                set-up (before the first exchange): tls_available,
                                   tls_active, plaintext_auth (yes/no), limits k=v ...,
                                   message UID TEXT (replaces the default maildrop)
    C: USER alice                  client sends the text plus CRLF
    R: RETR 1\\r\\nQUIT            client sends raw bytes, no CRLF added
    S: +OK Send PASS               one line the server writes
    E: CheckPassword alice secret  an event for the session other than writing
    A: login fail LOGIN-DELAY      how the fake session answers its next such question
                                   (also: login unavailable, scram unavailable)
    @ eof                          the client drops the connection

C:/R: text understands the escapes \\r \\n \\t \\\\ and \\xNN, and {N*text} repeats text
N times. Output lines show a trailing space as \\x20. Without an A: line the fake
session answers from its world: alice (also alice@example.test) has password
"secret", the maildrop holds the default messages, reads and commits succeed.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from poczta.pop3 import (
    CheckPassword,
    Close,
    CommitDeletions,
    Continue,
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
    Pop3Server,
    Reply,
    StartTls,
)
from poczta.sasl import derive_scram_credentials

HOSTNAME = "mail.example.test"
CANONICAL = "alice@example.test"
PASSWORD = "secret"
SCRAM = derive_scram_credentials(PASSWORD, iterations=4096, salt=b"poczta-test-salt")

DEFAULT_MESSAGES: tuple[tuple[str, bytes], ...] = (
    (
        "u1",
        b"From: bob@example.test\r\nSubject: first\r\n\r\n"
        b"Hello Alice.\r\n.leading dot\r\n..two dots\r\n.\r\nBye.\r\n",
    ),
    ("u2", b"Subject: second\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"),
    ("u3", b"Subject: third\r\n\r\nshort\r\n"),
)

_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|r|n|t|\\)")
_REPEAT = re.compile(r"\{(\d+)\*([^}]*)\}")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


def unescape(text: str) -> bytes:
    """Transcript text → bytes: {N*x} repetition, then backslash escapes."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return _SIMPLE.get(code) or bytes([int(code[1:], 16)])

    return _ESCAPE.sub(one, text.encode("utf-8"))


def wire_size(data: bytes) -> int:
    """The size of a message as sent: CRLF line ends, a final line end added."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return sum(len(line) + 2 for line in lines)


def render(event: Event) -> list[str]:
    """Transcript lines for one event."""
    if isinstance(event, Reply | MultiLine | Continue):
        lines = event.encode().decode("utf-8", "backslashreplace").split("\r\n")
        assert lines[-1] == "", "output must end with CRLF"
        return [("S: " + re.sub(r" $", r"\\x20", line)).rstrip() for line in lines[:-1]]
    match event:
        case CheckPassword(user=user, password=password):
            return [f"E: CheckPassword {user} {password}"]
        case NeedScram(authcid=authcid):
            return [f"E: NeedScram {authcid}"]
        case OpenMailbox(user=user):
            return [f"E: OpenMailbox {user}"]
        case NeedMessage(number=number, uid=uid):
            return [f"E: NeedMessage {number} {uid}"]
        case NeedTop(number=number, uid=uid, lines=count):
            return [f"E: NeedTop {number} {uid} {count}"]
        case CommitDeletions(uids=uids):
            return ["E: CommitDeletions " + " ".join(uids)]
        case StartTls():
            return ["E: StartTls"]
        case Close():
            return ["E: Close"]
    raise AssertionError(f"unrenderable event {event!r}")


@dataclass
class FakeSession:
    """Answers the core's questions like the real session would, from a small world."""

    core: Pop3Server
    messages: list[tuple[str, bytes]] = field(default_factory=lambda: list(DEFAULT_MESSAGES))
    overrides: deque[tuple[str, list[str]]] = field(default_factory=deque)
    committed: list[tuple[str, ...]] = field(default_factory=list)
    closed: bool = False

    def _override(self, kind: str) -> list[str] | None:
        if self.overrides and self.overrides[0][0] == kind:
            return self.overrides.popleft()[1]
        return None

    def drive(self, events: list[Event]) -> list[str]:
        """Render events, answering questions until the core waits for input again."""
        lines: list[str] = []
        queue = deque(events)
        while queue:
            event = queue.popleft()
            lines += render(event)
            queue.extend(self.answer(event))
        return lines

    def answer(self, event: Event) -> list[Event]:
        """The core's follow-up events after answering `event` (none for writes)."""
        core = self.core
        match event:
            case CheckPassword(user=user, password=password):
                return core.login_result(self._login(user, password))
            case NeedScram(authcid=authcid):
                forced = self._override("scram")
                if forced == ["unavailable"]:
                    return core.scram_unavailable()
                known = authcid in ("alice", CANONICAL) and forced is None
                return core.scram_result(SCRAM if known else None, CANONICAL if known else None)
            case OpenMailbox():
                return core.mailbox_opened(self._mailbox())
            case NeedMessage(number=number) | NeedTop(number=number):
                missing = self._override("message") is not None
                return core.message_data(None if missing else self.messages[number - 1][1])
            case CommitDeletions(uids=uids):
                failed = self._override("update") is not None
                if not failed:
                    self.committed.append(uids)
                return core.update_done(not failed)
            case StartTls():
                return core.tls_started()
            case Close():
                self.closed = True
        return []

    def _login(self, user: str, password: str) -> LoginResult:
        forced = self._override("login")
        if forced is not None:
            if forced[0] == "ok":
                return LoginResult.success(CANONICAL)
            if forced[0] == "unavailable":
                return LoginResult.unavailable()
            return LoginResult.failure(*forced[1:2])
        if user in ("alice", CANONICAL) and password == PASSWORD:
            return LoginResult.success(CANONICAL)
        return LoginResult.failure()

    def _mailbox(self) -> MaildropSnapshot | MailboxError:
        forced = self._override("mailbox")
        if forced is not None:
            return MailboxError(forced[0], " ".join(forced[1:]) or "Maildrop unavailable")
        return MaildropSnapshot([(uid, wire_size(data)) for uid, data in self.messages])


@dataclass
class Transcript:
    """A parsed transcript: set-up options and the exchange lines."""

    options: dict[str, str]
    limits: dict[str, int]
    messages: list[tuple[str, bytes]]
    lines: list[str]

    @classmethod
    def parse(cls, text: str) -> Transcript:
        options: dict[str, str] = {}
        limits: dict[str, int] = {}
        messages: list[tuple[str, bytes]] = []
        lines: list[str] = []
        for raw in text.splitlines():
            if not raw.strip() or raw.startswith("#"):
                continue
            if raw.startswith("@ ") and raw != "@ eof":
                key, _, value = raw[2:].partition(" ")
                if key == "limits":
                    limits.update({k: int(v) for k, v in (p.split("=") for p in value.split())})
                elif key == "message":
                    uid, _, body = value.partition(" ")
                    messages.append((uid, unescape(body)))
                else:
                    options[key] = value
                continue
            lines.append(raw)
        return cls(options, limits, messages, lines)

    def server(self) -> Pop3Server:
        def flag(name: str, default: bool) -> bool:
            return self.options.get(name, "yes" if default else "no") == "yes"

        return Pop3Server(
            hostname=HOSTNAME,
            tls_available=flag("tls_available", True),
            tls_active=flag("tls_active", True),
            plaintext_auth_allowed=flag("plaintext_auth", False),
            limits=Pop3Limits(**self.limits),
        )

    def run(self) -> tuple[list[str], FakeSession]:
        """Play the client side; returns the transcript as it actually went."""
        core = self.server()
        session = FakeSession(core)
        if self.messages:
            session.messages = list(self.messages)
        out = session.drive(core.start())
        for line in self.lines:
            kind = line[:2]
            if kind == "C:":
                out.append(line)
                out += session.drive(core.receive(unescape(line[3:]) + b"\r\n"))
            elif kind == "R:":
                out.append(line)
                out += session.drive(core.receive(unescape(line[3:])))
            elif kind == "A:":
                out.append(line)
                what, *rest = line[3:].split()
                session.overrides.append((what, rest))
            elif line == "@ eof":
                out.append(line)
                out += session.drive(core.eof())
        assert not session.overrides, f"unused answers: {list(session.overrides)}"
        return out, session


def run_file(path: Path) -> tuple[list[str], list[str]]:
    """(expected, actual) lines of a transcript file."""
    transcript = Transcript.parse(path.read_text(encoding="utf-8"))
    actual, _ = transcript.run()
    return transcript.lines, actual
