"""One test connection: its tags, what it knows of the server, and simple commands.

The runner prepares the mailbox through `Session.simple`, which sends one command and
reads to its tagged reply; script commands go through the runner's own loop, which
matches each response as it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .args import ascii_upper, quote
from .client import ImapConnection, ImapError, Response, TlsMode

_CAPABILITY_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


class SetupError(Exception):
    """Preparing the script's start state failed; the message says which step."""


@dataclass
class Session:
    conn: ImapConnection
    number: int  # 1-based, as the script names connections
    capabilities: set[str] = field(default_factory=set)
    exists: int = 0
    seen_bye: bool = False
    logged_in: bool = False
    _tags: int = 0

    def next_tag(self) -> str:
        self._tags += 1
        return f"{self.number}.{self._tags}"

    @property
    def literal_plus(self) -> bool:
        return "LITERAL+" in self.capabilities

    def has(self, capability: str) -> bool:
        return ascii_upper(capability) in self.capabilities

    def track(self, response: Response) -> None:
        """Keep the connection's view of the mailbox and the server up to date."""
        args = response.args
        first = ascii_upper(args[0].atom or "") if args else ""
        second = ascii_upper(args[1].atom or "") if len(args) > 1 else ""
        if first.isdigit() and second == "EXISTS":
            self.exists = int(first)
        elif first.isdigit() and second == "EXPUNGE":
            self.exists = max(0, self.exists - 1)
        elif first == "CAPABILITY":
            self.capabilities = {ascii_upper(a.atom or "") for a in args[1:]}
        elif first == "BYE":
            self.seen_bye = True
        if first in ("OK", "PREAUTH", "BYE"):
            self.note_capability_code(response.raw)

    def note_capability_code(self, text: str) -> bool:
        found = _CAPABILITY_CODE.search(text)
        if found is not None:
            self.capabilities = {ascii_upper(c) for c in found.group(1).split()}
        return found is not None

    def simple(self, command: str,
               on_untagged: Callable[[Response], None] | None = None) -> Response:
        """Send one command and return its tagged reply; untagged ones are tracked."""
        tag = self.next_tag()

        def handle(response: Response) -> None:
            if response.is_untagged:
                self.track(response)
                if on_untagged is not None:
                    on_untagged(response)

        self.conn.send_command(tag, command, literal_plus=self.literal_plus, on_response=handle)
        while True:
            response = self.conn.read_response()
            if response.tag == tag:
                return response
            handle(response)

    def expect_ok(self, command: str, what: str) -> Response:
        reply = self.simple(command)
        status = ascii_upper(reply.args[0].atom or "") if reply.args else ""
        if status != "OK":
            raise SetupError(f"{what} failed: {reply.line}")
        return reply

    def greet(self, host: str, tls: TlsMode) -> Response:
        """Read the greeting, learn the capabilities, and upgrade to TLS if asked."""
        banner = self.conn.read_response()
        self.track(banner)
        kind = ascii_upper(banner.args[0].atom or "") if banner.args else ""
        if not banner.is_untagged or kind not in ("OK", "PREAUTH"):
            raise SetupError(f"unexpected greeting: {banner.line}")
        self.logged_in = kind == "PREAUTH"
        if not self.capabilities:
            self.expect_ok("CAPABILITY", "CAPABILITY")
        if tls is TlsMode.STARTTLS:
            if not self.has("STARTTLS"):
                raise SetupError("the server offers no STARTTLS")
            self.expect_ok("STARTTLS", "STARTTLS")
            self.conn.start_tls(host)
            self.capabilities = set()
            self.expect_ok("CAPABILITY", "CAPABILITY after STARTTLS")
        return banner

    def login(self, user: str, password: str) -> None:
        if self.logged_in:
            return
        self.capabilities = set()
        reply = self.expect_ok(f"LOGIN {quote(user)} {quote(password)}", f"LOGIN as {user}")
        self.logged_in = True
        if not self.note_capability_code(reply.raw) and not self.capabilities:
            self.expect_ok("CAPABILITY", "CAPABILITY after LOGIN")


def open_session(number: int, host: str, port: int, tls: TlsMode, timeout: float) -> Session:
    try:
        return Session(ImapConnection.connect(host, port, tls=tls, timeout=timeout), number)
    except ImapError as error:
        raise SetupError(str(error)) from None
