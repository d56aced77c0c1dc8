"""Transcript runner for the SMTP client core: the server side is scripted, the client checked.

The reverse of `smtp_transcript`: `S:` lines are what the test feeds as the server,
`C:` lines what the client must write. Directives, one per line (`#` starts a comment
line, blank lines are ignored); text understands the escapes \\r \\n \\t \\\\ \\xHH:

- `@ key=value ...` client options before the dialogue: tls_policy (none, opportunistic,
  required), tls_active, user and password (credentials), allow_plaintext_auth, peer,
  max_line, max_lines, max_size (reply limits).
- `M: <sender> <rcpt>[;notify=A,B][;orcpt=ADDR] ... [ret=X] [envid=X] [smtputf8]` starts a
  message; `Y: text` adds text plus CRLF to its body (`Y+: text` adds it without CRLF);
  `SEND` hands the message to the client (`SEND norset`: with `rset=False`).
- `S: text` the server sends text plus CRLF; `B: text` exactly these bytes.
- `C: text` the next output is one write of text plus CRLF (several lines of one write
  are joined with \\r\\n). `D: bytes` the next output is a SendBody whose pieces, joined,
  are these bytes. A final `*` on `C:`, `D:` or `E:` matches any rest.
- `E: event` the next output is this event: StartTls, Close, HostFailed <text>,
  RecipientResult <address> <status> <text>, TransactionResult <address>=<status> ...
- `TLS: ok` or `TLS: fail reason` answers StartTls; `QUIT`, `EOF`, `TIMEOUT` call quit(),
  eof(), timed_out(); `WAIT: NAME` checks `waiting_for`.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from poczta.smtp.client import SmtpClient
from poczta.smtp.client_events import (
    ClientEvent,
    Credentials,
    HostFailed,
    OutboundMessage,
    OutboundRecipient,
    RecipientResult,
    SendBody,
    TlsPolicy,
    TransactionResult,
    Write,
)
from poczta.smtp.client_replies import ReplyLimits
from tests.smtp.smtp_transcript import TranscriptError, _coerce, unescape


def escape(data: bytes) -> str:
    """Bytes as transcript text: printable ASCII and UTF-8 kept, the rest escaped."""
    text = data.decode("utf-8", "surrogateescape")
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c in "\r\n\t":
            out.append({"\r": "\\r", "\n": "\\n", "\t": "\\t"}[c])
        elif "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def render(event: ClientEvent) -> tuple[str, str]:
    """An event as one transcript output line (kind, text)."""
    if isinstance(event, Write):
        data = event.data[:-2] if event.data.endswith(b"\r\n") else event.data
        return "C", escape(data)
    if isinstance(event, SendBody):
        return "D", escape(b"".join(event.chunks))
    if isinstance(event, RecipientResult):
        outcome = event.outcome
        return "E", f"RecipientResult <{event.address}> {outcome.status.value} {outcome.text}"
    if isinstance(event, TransactionResult):
        parts = [f"<{r.address}>={r.outcome.status.value}" for r in event.results]
        return "E", " ".join(["TransactionResult", *parts])
    if isinstance(event, HostFailed):
        return "E", f"HostFailed {event.outcome.enhanced} {event.outcome.text}"
    return "E", type(event).__name__


def build_client(options: dict[str, Any]) -> SmtpClient:
    creds = None
    if "user" in options:
        creds = Credentials(str(options["user"]), str(options.get("password", "")))
    limit_names = ("max_line", "max_lines", "max_size")
    limits = ReplyLimits(**{k: options[k] for k in limit_names if k in options})
    return SmtpClient(
        hostname="client.example.test",
        peer=str(options.get("peer", "mx.example.test")),
        tls_policy=TlsPolicy(options.get("tls_policy", "opportunistic")),
        tls_active=bool(options.get("tls_active", False)),
        credentials=creds,
        allow_plaintext_auth=bool(options.get("allow_plaintext_auth", False)),
        reply_limits=limits,
    )


def parse_message(text: str) -> OutboundMessage:
    """An `M:` line as a message without body."""
    sender = ""
    recipients: list[OutboundRecipient] = []
    extra: dict[str, Any] = {}
    for i, word in enumerate(text.split()):
        if word.startswith("<"):
            address, *params = word.split(";")
            values = dict(p.split("=", 1) for p in params)
            if i == 0:
                sender = address[1:-1]
                continue
            notify = tuple(values["notify"].split(",")) if "notify" in values else None
            recipients.append(OutboundRecipient(address[1:-1], notify, values.get("orcpt")))
        elif word == "smtputf8":
            extra["smtputf8"] = True
        else:
            key, _, value = word.partition("=")
            extra[key] = value
    return OutboundMessage(sender, tuple(recipients), b"", **extra)


class ClientTranscript:
    """Plays one transcript file against a fresh client core."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.out: deque[tuple[str, str]] = deque()
        self.client: SmtpClient | None = None
        self.message: OutboundMessage | None = None
        self.body = bytearray()

    def fail(self, lineno: int, message: str) -> TranscriptError:
        return TranscriptError(f"{self.path.name}:{lineno}: {message}")

    def feed(self, events: list[ClientEvent]) -> None:
        self.out.extend(render(event) for event in events)

    def run(self) -> None:
        options: dict[str, Any] = {}
        for lineno, line in enumerate(self.lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("@"):
                for item in line[1:].split():
                    key, _, value = item.partition("=")
                    options[key] = _coerce(value)
                continue
            if self.client is None:
                self.client = build_client(options)
            self.step(lineno, line)
        if self.out:
            raise self.fail(len(self.lines), f"unexpected output left: {list(self.out)}")

    def step(self, lineno: int, line: str) -> None:
        client = self.client
        assert client is not None
        kind, _, text = line.partition(":")
        text = text[1:] if text.startswith(" ") else text
        if line in ("SEND", "SEND norset", "QUIT", "EOF", "TIMEOUT"):
            self.call(lineno, line)
        elif kind == "M":
            self.message, self.body = parse_message(text), bytearray()
        elif kind in ("Y", "Y+"):
            self.body += unescape(text) + (b"\r\n" if kind == "Y" else b"")
        elif kind == "S":
            self.feed(client.receive(unescape(text) + b"\r\n"))
        elif kind == "B":
            self.feed(client.receive(unescape(text)))
        elif kind in ("C", "D", "E"):
            self.expect(lineno, kind, text)
        elif kind == "TLS":
            self.feed(client.tls_started() if text == "ok" else client.tls_failed(text[5:]))
        elif kind == "WAIT":
            if client.waiting_for.name != text:
                raise self.fail(lineno, f"waiting for {client.waiting_for.name}, not {text}")
        else:
            raise self.fail(lineno, f"unknown directive {line!r}")

    def call(self, lineno: int, word: str) -> None:
        client = self.client
        assert client is not None
        if word.startswith("SEND"):
            if self.message is None:
                raise self.fail(lineno, "SEND without M:")
            message = OutboundMessage(
                self.message.sender,
                self.message.recipients,
                bytes(self.body),
                self.message.ret,
                self.message.envid,
                self.message.smtputf8,
            )
            self.feed(client.send(message, rset=word != "SEND norset"))
        elif word == "QUIT":
            self.feed(client.quit())
        elif word == "EOF":
            self.feed(client.eof())
        else:
            self.feed(client.timed_out())

    def expect(self, lineno: int, kind: str, text: str) -> None:
        if not self.out:
            raise self.fail(lineno, f"expected {kind}: {text!r}, got nothing")
        got = self.out.popleft()
        if text.endswith("*") and got[0] == kind and got[1].startswith(text[:-1]):
            return
        if got != (kind, text):
            raise self.fail(lineno, f"expected {kind}: {text!r}, got {got[0]}: {got[1]!r}")
