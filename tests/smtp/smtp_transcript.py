"""Transcript runner for the SMTP server core: `C:`/`S:` dialogues fed through `SmtpServer`.

Directives, one per line (`#` starts a comment line, blank lines are ignored):

- `@ key=value ...` core options before the dialogue: role, tls_available, tls_active,
  plaintext_auth_allowed, bare_line_endings, client_ip, greeting_note, sasl_nonce and
  any `SmtpLimits` field (max_errors=3, ...).
- `C: text` the client sends text plus CRLF; `B: text` sends exactly the bytes, no CRLF.
  Both understand the escapes \\r \\n \\t \\\\ and \\xHH.
- `S: line` the next output is this reply line (a final `*` matches any rest of line).
- `E: Name` the next output is this non-reply event (StartTls, Close, AuthFailed,
  AuthSucceeded); after `E: StartTls` the handshake is taken to succeed.
- `Q: text` the next output is this question (see `render`); `A: ...` answers the pending
  question: `accept [text]`, `reject CODE ENHANCED text`, `user NAME`, `nouser`,
  `scram USER PASSWORD`, `scram-unknown`. A `Q:` line before `A:` is optional.
- `D: bytes` the data of the last MessageReceived (escapes as for `B:`).
- `EOF` the client closes the connection.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import Any

from poczta.sasl import derive_scram_credentials
from poczta.smtp import (
    Accept,
    AuthFailed,
    AuthPassword,
    AuthScram,
    AuthSucceeded,
    CheckRecipient,
    CheckSender,
    Event,
    MessageReceived,
    Reject,
    Reply,
    Role,
    SmtpLimits,
    SmtpServer,
    TlsInfo,
)

SCRAM_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt\\])")
_LIMIT_NAMES = {f.name for f in fields(SmtpLimits)}


def unescape(text: str) -> bytes:
    """Transcript text to bytes: UTF-8, with \\r \\n \\t \\\\ \\xHH escapes."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        code = m.group(1)
        if code[0] == "x":
            out.append(int(code[1:], 16))
        else:
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[code]
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _params(obj: object) -> str:
    parts = []
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if value in (None, False):
            continue
        key = f.name.upper()
        if value is True:
            parts.append(f" {key}")
        elif isinstance(value, tuple) and key == "ORCPT":
            parts.append(f" ORCPT={value[0]};{value[1]}")
        elif isinstance(value, tuple):
            parts.append(f" {key}={','.join(value)}")
        else:
            parts.append(f" {key}={value}")
    return "".join(parts)


def render(event: Event) -> list[tuple[str, str]]:
    """An event as transcript output lines (kind, text)."""
    if isinstance(event, Reply):
        return [("S", line) for line in event.render()]
    if isinstance(event, CheckSender):
        return [("Q", f"CheckSender <{event.reverse_path}>{_params(event.params)}")]
    if isinstance(event, CheckRecipient):
        return [("Q", f"CheckRecipient <{event.forward_path}>{_params(event.params)}")]
    if isinstance(event, AuthPassword):
        return [("Q", f"AuthPassword {event.authcid} {event.password}")]
    if isinstance(event, AuthScram):
        return [("Q", f"AuthScram {event.authcid}")]
    if isinstance(event, MessageReceived):
        env = event.envelope
        rcpts = ",".join(f"<{r.address}>" for r in env.recipients)
        return [
            (
                "Q",
                f"MessageReceived from=<{env.mail_from}> to={rcpts} protocol={env.protocol} "
                f"user={env.user or '-'} size={len(event.data)}",
            )
        ]
    if isinstance(event, AuthFailed):
        return [("E", f"AuthFailed {event.authcid}")]
    if isinstance(event, AuthSucceeded):
        return [("E", f"AuthSucceeded {event.user}")]
    return [("E", type(event).__name__)]


def _coerce(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if value.isdigit():
        return int(value)
    return value


def build_core(options: dict[str, Any]) -> SmtpServer:
    limits = SmtpLimits(**{k: v for k, v in options.items() if k in _LIMIT_NAMES})
    kwargs: dict[str, Any] = {
        "hostname": "mx.example.test",
        "role": Role(options.get("role", "mx")),
        "limits": limits,
        "tls_available": options.get("tls_available", True),
        "tls_active": options.get("tls_active", False),
        "plaintext_auth_allowed": options.get("plaintext_auth_allowed", False),
        "client_ip": options.get("client_ip", "192.0.2.1"),
        "greeting_note": options.get("greeting_note", "").replace("_", " "),
        "bare_line_endings": options.get("bare_line_endings", "normalize"),
    }
    if "sasl_nonce" in options:
        nonce = str(options["sasl_nonce"])
        kwargs["sasl_nonce"] = lambda: nonce
    return SmtpServer(**kwargs)


class TranscriptError(AssertionError):
    pass


class Transcript:
    """Plays one transcript file against a fresh core."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.out: deque[tuple[str, str]] = deque()
        self.last_data: bytes | None = None
        self.core: SmtpServer | None = None

    def fail(self, lineno: int, message: str) -> TranscriptError:
        return TranscriptError(f"{self.path.name}:{lineno}: {message}")

    def feed(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessageReceived):
                self.last_data = event.data
            self.out.extend(render(event))

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
            if self.core is None:
                self.core = build_core(options)
                self.feed(self.core.start())
            self.step(lineno, line)
        if self.out:
            raise self.fail(len(self.lines), f"unexpected output left: {list(self.out)}")

    def step(self, lineno: int, line: str) -> None:
        assert self.core is not None
        kind, _, text = line.partition(":")
        text = text[1:] if text.startswith(" ") else text
        if line == "EOF":
            self.feed(self.core.eof())
        elif kind == "C":
            self.feed(self.core.receive(unescape(text) + b"\r\n"))
        elif kind == "B":
            self.feed(self.core.receive(unescape(text)))
        elif kind in ("S", "E", "Q"):
            self.expect(lineno, kind, text)
        elif kind == "A":
            if self.out and self.out[0][0] == "Q":
                self.out.popleft()
            elif self.out:
                raise self.fail(lineno, f"answer given but next output is {self.out[0]}")
            self.feed(self.answer(text))
        elif kind == "D":
            if self.last_data != unescape(text):
                raise self.fail(lineno, f"message data was {self.last_data!r}")
        else:
            raise self.fail(lineno, f"unknown directive {line!r}")

    def expect(self, lineno: int, kind: str, text: str) -> None:
        assert self.core is not None
        if not self.out:
            raise self.fail(lineno, f"expected {kind}: {text!r}, got nothing")
        got = self.out.popleft()
        if text.endswith("*") and got[0] == kind and got[1].startswith(text[:-1]):
            pass
        elif got != (kind, text):
            raise self.fail(lineno, f"expected {kind}: {text!r}, got {got[0]}: {got[1]!r}")
        if (kind, text) == ("E", "StartTls"):
            self.feed(self.core.tls_started(TLS))

    def answer(self, text: str) -> list[Event]:
        assert self.core is not None
        word, _, rest = text.partition(" ")
        if word == "accept":
            return self.core.answer(Accept(rest))
        if word == "reject":
            code, enhanced, reason = rest.split(" ", 2)
            return self.core.answer(Reject(int(code), enhanced, reason))
        if word == "user":
            return self.core.answer_auth_password(rest)
        if word == "nouser":
            return self.core.answer_auth_password(None)
        if word == "unavailable":
            return self.core.answer_auth_unavailable()
        if word == "scram":
            user, password = rest.split(" ", 1)
            creds = derive_scram_credentials(password, salt=SCRAM_SALT)
            return self.core.answer_auth_scram(creds, user)
        if word == "scram-unknown":
            return self.core.answer_auth_scram(None, None)
        raise TranscriptError(f"unknown answer {text!r}")
