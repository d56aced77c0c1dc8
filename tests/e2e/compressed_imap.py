"""A minimal IMAP client for the e2e tests that can speak COMPRESS=DEFLATE (imaplib cannot).

It sends command lines, reads until a tagged reply or any pattern, and after
`compress()` deflates what it sends (one Z_SYNC_FLUSH per send) and inflates what it
receives. `wire_in` / `wire_out` count the octets on the socket, compressed or not.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import zlib

RAW_DEFLATE = -15


class CompressedImap:
    def __init__(self, sock: socket.socket | ssl.SSLSocket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buffer = b""
        self.inflater: zlib._Decompress | None = None
        self.deflater: zlib._Compress | None = None
        self.wire_in = self.wire_out = 0
        self.closed = False

    # --- sending -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.deflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        """Octets as they are, past the deflater (for corrupt or crafted input)."""
        self.sock.sendall(data)
        self.wire_out += len(data)

    def command(self, tag: str, text: str | bytes) -> bytes:
        line = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + line + b"\r\n")
        return self.tagged(tag)

    def append(self, tag: str, mailbox: str, message: bytes) -> bytes:
        """APPEND with a synchronising literal: waits for the server's continuation."""
        self.send(f"{tag} APPEND {mailbox} {{{len(message)}}}\r\n".encode())
        self.read_until(rb"(?m)^\+ [^\r\n]*\r\n")
        self.send(message + b"\r\n")
        return self.tagged(tag)

    # --- receiving -----------------------------------------------------------------

    def tagged(self, tag: str) -> bytes:
        """Everything up to and including the tagged reply of `tag`."""
        return self.read_until(rb"(?m)^" + re.escape(tag.encode()) + rb" (OK|NO|BAD)[^\r\n]*\r\n")

    def read_until(self, pattern: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            found = re.search(pattern, self.buffer)
            if found is not None:
                data, self.buffer = self.buffer[: found.end()], self.buffer[found.end() :]
                return data
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {self.buffer[-300:]!r}")
            self._receive(deadline)

    def read_to_end(self) -> bytes:
        """What the server sends until it closes the connection (or resets it)."""
        deadline = time.monotonic() + self.timeout
        while not self.closed and time.monotonic() < deadline:
            self._receive(deadline)
        data, self.buffer = self.buffer, b""
        return data

    def _receive(self, deadline: float) -> None:
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.wire_in += len(chunk)
        self.buffer += self.inflater.decompress(chunk) if self.inflater is not None else chunk

    # --- COMPRESS ------------------------------------------------------------------

    def compress(self, tag: str = "z") -> bytes:
        """COMPRESS DEFLATE; from its OK on, both directions are compressed."""
        reply = self.command(tag, "COMPRESS DEFLATE")
        if f"{tag} OK".encode() in reply:
            self.inflater = zlib.decompressobj(RAW_DEFLATE)
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
            self.buffer = self.inflater.decompress(self.buffer)
        return reply
