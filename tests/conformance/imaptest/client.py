"""A small blocking IMAP client for the scripted tests: literals both ways, timeouts, TLS.

Blocking sockets suit the format: a script talks to one connection at a time, and
what the others receive meanwhile waits in their socket buffers until their turn,
which is what the reference runner does by pausing their input. Responses are read
whole (every literal included) and parsed by `args.parse_args`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .args import Arg, parse_args

MAX_RESPONSE = 64 * 1024 * 1024
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\r?\n\Z")
_LITERAL_MARKER = re.compile(r" (~?)\{(\d+)(\+?)\}\Z")


class TlsMode(Enum):
    PLAIN = "plain"
    TLS = "tls"  # TLS from the first byte (port 993)
    STARTTLS = "starttls"


class ImapError(Exception):
    """The connection failed: closed, timed out, or sent something unreadable."""


class ConnectionClosed(ImapError):
    pass


class ImapTimeout(ImapError):
    pass


@dataclass(frozen=True)
class Response:
    raw: str  # latin-1, with CRLF and literals
    args: tuple[Arg, ...]  # after the tag

    tag: str

    @property
    def is_continuation(self) -> bool:
        return self.tag == "+"

    @property
    def is_untagged(self) -> bool:
        return self.tag == "*"

    @property
    def line(self) -> str:
        """The response for a transcript, line breaks shown as escapes."""
        return self.raw.rstrip("\r\n").replace("\r", "\\r").replace("\n", "\\n")


def parse_response(raw: str) -> Response:
    tag, _, rest = raw.partition(" ")
    tag = tag.rstrip("\r\n")
    if tag == "+":
        return Response(raw=raw, args=(), tag=tag)
    return Response(raw=raw, args=parse_args(rest, lenient=True), tag=tag)


def split_literals(command: str) -> list[tuple[str, str | None]]:
    """The command as (text up to a literal's ``{N}``, that literal) pieces, then the rest.

    A literal is ``{N}``, ``{N+}`` or ``~{N}`` after a space at a line's end, followed by
    exactly N characters; any other line break is sent as it is.
    """
    pieces: list[tuple[str, str | None]] = []
    text = ""
    pos = 0
    while True:
        newline = command.find("\n", pos)
        if newline < 0:
            break
        line = command[pos:newline].removesuffix("\r")
        marker = _LITERAL_MARKER.search(line)
        if marker is None:
            text += command[pos : newline + 1]
            pos = newline + 1
            continue
        size = int(marker.group(2))
        start = newline + 1
        pieces.append((text + line, command[start : start + size]))
        text, pos = "", start + size
    pieces.append((text + command[pos:], None))
    return pieces


def nonsync(marker_line: str) -> str:
    """The line with its trailing ``{N}`` made a LITERAL+ ``{N+}``."""
    if marker_line.endswith("+}"):
        return marker_line
    return marker_line[:-1] + "+}"


class ImapConnection:
    """One IMAP connection: send commands (waiting for continuations), read responses."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buffer = b""
        self.closed = False
        sock.settimeout(timeout)

    @classmethod
    def connect(cls, host: str, port: int, *, tls: TlsMode = TlsMode.PLAIN,
                timeout: float = 30.0) -> ImapConnection:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            raise ImapError(f"cannot connect to {host}:{port}: {error}") from None
        if tls is TlsMode.TLS:
            sock = _client_context().wrap_socket(sock, server_hostname=host)
        return cls(sock, timeout)

    def start_tls(self, host: str) -> None:
        if self.buffer:
            raise ImapError("data pipelined after STARTTLS")
        self.sock = _client_context().wrap_socket(self.sock, server_hostname=host)
        self.sock.settimeout(self.timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()

    def send(self, data: str) -> None:
        try:
            self.sock.sendall(data.encode("latin-1"))
        except TimeoutError:
            raise ImapTimeout("timed out sending to the server") from None
        except OSError as error:
            self.closed = True
            raise ConnectionClosed(f"sending failed: {error}") from None

    def send_command(self, tag: str, command: str, *, literal_plus: bool,
                     on_response: Callable[[Response], None]) -> bool:
        """Send ``tag command``; False if the server answered before the whole was sent.

        Synchronizing literals wait for the server's ``+``; the responses read while
        waiting go to ``on_response``. With LITERAL+ every literal is sent at once.
        """
        pieces = split_literals(f"{tag} {command}")
        if literal_plus:
            self.send("".join(nonsync(text) + "\r\n" + literal if literal is not None
                              else text + "\r\n" for text, literal in pieces))
            return True
        for text, literal in pieces:
            if literal is None:
                self.send(text + "\r\n")
                break
            self.send(text + "\r\n")
            if not text.endswith("+}") and not self._await_continuation(tag, on_response):
                return False
            self.send(literal)
        return True

    def _await_continuation(self, tag: str, on_response: Callable[[Response], None]) -> bool:
        while True:
            response = self.read_response()
            if response.is_continuation:
                return True
            on_response(response)
            if response.tag == tag:
                return False

    def read_response(self) -> Response:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self._read_line()
            parts.append(line)
            size += len(line)
            literal = _LITERAL_AT_END.search(line)
            if literal is None:
                break
            count = int(literal.group(1))
            if size + count > MAX_RESPONSE:
                raise ImapError(f"response over {MAX_RESPONSE} bytes")
            parts.append(self._read_exact(count))
            size += count
        return parse_response(b"".join(parts).decode("latin-1"))

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise ImapTimeout(f"no response from the server in {self.timeout:g} s") from None
        except OSError as error:
            self.closed = True
            raise ConnectionClosed(f"connection lost: {error}") from None
        if not data:
            self.closed = True
            raise ConnectionClosed("the server closed the connection")
        self.buffer += data

    def _read_line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
                return line
            if len(self.buffer) > MAX_RESPONSE:
                raise ImapError(f"response line over {MAX_RESPONSE} bytes")
            self._fill()

    def _read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


def _client_context() -> ssl.SSLContext:
    # conformance runs target test servers with self-signed certificates
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
